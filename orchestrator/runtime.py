"""Per-process wiring: the adapters a worker or API process uses, built on first use.

Nothing is connected at import or at construction: a prefork child builds its own clients
after the fork, the first time a task needs them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import redis

from orchestrator.db.session import Database
from orchestrator.sdk import REGISTRY, Registry, load_worker_modules
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore

if TYPE_CHECKING:
    from celery import Celery

    from orchestrator.admission import Admission
    from orchestrator.core.resources import ResourcePool
    from orchestrator.outputs import Outputs


class Runtime:
    """The adapters of one process, each created lazily and kept."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        self.settings = settings
        self._celery = celery

    @cached_property
    def celery(self) -> Celery:
        if self._celery is None:
            from orchestrator.celery_app import create_celery_app

            self._celery = create_celery_app(self.settings)
        return self._celery

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url, health_check_interval=30)

    @cached_property
    def db(self) -> Database:
        return Database(self.settings)

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore(self.settings)

    @cached_property
    def outputs(self) -> Outputs:
        from orchestrator.outputs import Outputs

        return Outputs(self.redis, self.store)

    @cached_property
    def registry(self) -> Registry:
        load_worker_modules(self.settings.worker_modules)
        return REGISTRY

    @cached_property
    def pool(self) -> ResourcePool:
        from orchestrator.core.resources import load_resources

        return load_resources(self.settings.resources_file)

    @cached_property
    def unusable(self) -> frozenset[str]:
        """Resources of the pool this process's runs cannot use (see ``Settings.capabilities``)."""
        return frozenset(self.pool.unusable(set(self.settings.capabilities)))

    @cached_property
    def admission(self) -> Admission:
        from orchestrator.admission import Admission
        from orchestrator.ledger import usage_totals

        return Admission(self.redis, self.pool, ledger=lambda now: usage_totals(self.db, now))

    def close(self) -> None:
        for name in ("redis", "db"):
            if name in self.__dict__:
                resource = self.__dict__.pop(name)
                (resource.close if name == "redis" else resource.dispose)()
