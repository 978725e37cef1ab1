"""The WSGI entry point for gunicorn: the one module that builds the app when imported."""

from orchestrator.api import create_app
from orchestrator.settings import Settings

app = create_app(Settings.from_env())
