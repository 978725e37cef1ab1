"""Fixtures shared by the feed workers' tests: the shipped corpus served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from orchestrator.settings import Settings
from workers.lib.corpus import CorpusServer


@pytest.fixture(scope="module")
def corpus_server() -> Iterator[CorpusServer]:
    """The corpus on a private port: parallel test runs never share one."""
    running = CorpusServer(0)
    yield running
    running.stop()


@pytest.fixture
def strict(settings: Settings, corpus_server: CorpusServer, redis_client: redis.Redis) -> Settings:
    """Production's URL policy: private addresses refused, only the corpus origin trusted."""
    return settings.with_overrides(corpus_port=corpus_server.port, allow_private_urls=False)
