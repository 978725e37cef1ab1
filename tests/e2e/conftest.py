"""The end-to-end tier runs on ``tests.live`` (real worker processes, a real API process),
which the root conftest loads for every tier that needs it (e2e, security)."""

from __future__ import annotations

from tests.live import Api, Runner, free_port, run_cli

__all__ = ["Api", "Runner", "free_port", "run_cli"]
