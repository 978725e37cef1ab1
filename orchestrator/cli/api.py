"""``orchestrator api``: the production server (gunicorn with gevent workers).

gevent lets one process hold thousands of open progress streams; each stream costs a
greenlet, not a thread, and the SSE hub shares one Redis connection among them.
"""

from __future__ import annotations

import sys

import click

from orchestrator import template_registry
from orchestrator.settings import Settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", "processes", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--connections",
    default=2000,
    show_default=True,
    type=click.IntRange(min=1),
    help="open connections (progress streams) per process",
)
@click.pass_obj
def api(settings: Settings, host: str, port: int, processes: int, connections: int) -> None:
    """Serve the HTTP API."""
    from gunicorn.app.wsgiapp import WSGIApplication

    from orchestrator.ops.health import require
    from orchestrator.ops.migrations import upgrade
    from orchestrator.runtime import Runtime

    require(settings, ("redis", "database"))
    upgrade(settings)
    template_registry.sync_templates(Runtime(settings))
    argv = [
        "gunicorn",
        "orchestrator.api.wsgi:app",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(processes),
        "--worker-class",
        "gevent",
        "--worker-connections",
        str(connections),
        "--timeout",
        "120",
        "--graceful-timeout",
        "5",
        "--access-logfile",
        "-",
        # No credential from a URL (/dashboard?key=) or a header reaches the access log.
        "--logger-class",
        "orchestrator.api.access_log.RedactingLogger",
    ]
    sys.argv = argv
    WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").run()


COMMANDS = [api]
