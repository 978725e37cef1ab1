"""Per-process wiring: the adapters a worker or API process uses, built on first use.

Nothing is connected at import or at construction: a prefork child builds its own clients
after the fork, the first time a task needs them.
"""

from __future__ import annotations

from functools import cached_property

import redis
from celery import Celery

from orchestrator.broker import make_app
from orchestrator.core.resources import ResourcePool, load_resources
from orchestrator.db.session import Database
from orchestrator.engine.admission import Admission
from orchestrator.engine.ledger import usage_totals
from orchestrator.sdk import REGISTRY, Registry, load_worker_modules
from orchestrator.settings import Settings
from orchestrator.storage.objects import ObjectStore
from orchestrator.storage.outputs import Outputs


class Runtime:
    """The adapters of one process, each created lazily and kept."""

    def __init__(self, settings: Settings, celery: Celery | None = None) -> None:
        """``celery``: the app with its tasks, in a worker process (``celery_app`` builds it);
        elsewhere an app without tasks is made on first use, enough to send them by name."""
        self.settings = settings
        self._celery = celery

    @cached_property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = make_app(self.settings, self.registry)
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
        return Outputs(self.redis, self.store)

    @cached_property
    def registry(self) -> Registry:
        load_worker_modules(self.settings.worker_modules)
        return REGISTRY

    @cached_property
    def pool(self) -> ResourcePool:
        return load_resources(self.settings.resources_file)

    @cached_property
    def unusable(self) -> frozenset[str]:
        """Resources of the pool this process's runs cannot use (see ``Settings.capabilities``)."""
        return frozenset(self.pool.unusable(set(self.settings.capabilities)))

    @cached_property
    def admission(self) -> Admission:
        return Admission(self.redis, self.pool, ledger=lambda now: usage_totals(self.db, now))

    def preload(self) -> None:
        """Load now what every process would load on its first task: the database driver's
        modules, the pool file, the admission scripts. A prefork parent calls this so its
        children inherit them instead of each paying for them (about a second of CPU per
        child on a busy machine). Nothing connects: each child still opens its own."""
        Database.load_driver(self.settings.database_url)
        _ = self.admission

    def close(self) -> None:
        for name in ("redis", "db"):
            if name in self.__dict__:
                resource = self.__dict__.pop(name)
                (resource.close if name == "redis" else resource.dispose)()
