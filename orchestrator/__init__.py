"""Orchestrator: a Celery pipeline engine that reserves quotas before it runs.

Importing the package opens no connection and starts no thread.
"""

from orchestrator.errors import OrchestratorError
from orchestrator.sdk import StageContext, StageResult, WorkerType
from orchestrator.settings import Settings

__all__ = ["OrchestratorError", "Settings", "StageContext", "StageResult", "WorkerType"]
__version__ = "0.1.0"
