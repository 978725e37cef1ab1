"""The WSGI entry point for gunicorn: the one module that builds the app when imported."""

from orchestrator import logs
from orchestrator.api import create_app
from orchestrator.settings import Settings

settings = Settings.from_env()
logs.configure(settings)  # ORCH_LOG_FORMAT; secrets redacted from every line
app = create_app(settings)
