"""gunicorn's access log without credentials: ``/dashboard?key=...`` is how a browser opens
the dashboard, and the access log would otherwise keep the monitor key in the request line
(and, from the page's own requests, in the Referer) for anyone who reads the logs.

Used as ``--logger-class orchestrator.api.access_log.RedactingLogger`` by ``orchestrator api``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger

#: Query parameters whose values are credentials (compared decoded, case-insensitively).
SECRET_PARAMETERS = frozenset({"key", "api_key", "apikey", "token", "access_token"})
REDACTED = "[redacted]"
#: Request headers that carry credentials, as gunicorn names their atoms.
SECRET_HEADERS = frozenset({"{authorization}i", "{cookie}i", "{x-api-key}i"})
#: The query of a URL inside a log atom (request line, Referer).
_QUERY = re.compile(r"\?([^\s#]*)")


def redact_query(query: str) -> str:
    """``query`` with the value of every credential parameter replaced."""
    pairs = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        if sep and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
            pair = f"{name}={REDACTED}"
        pairs.append(pair)
    return "&".join(pairs)


def redact_url(text: str) -> str:
    """Every URL query in ``text`` (a request line, a Referer) redacted."""
    return _QUERY.sub(lambda match: "?" + redact_query(match.group(1)), text)


class RedactingLogger(Logger):
    """gunicorn's logger whose access-log atoms never hold a credential; its lines go out in
    ``ORCH_LOG_FORMAT`` through the filters of ``orchestrator.logs``."""

    def setup(self, cfg: Any) -> None:
        from orchestrator import logs
        from orchestrator.settings import Settings

        super().setup(cfg)
        settings = Settings.from_env()
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                logs.decorate(handler, settings)

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        atoms = super().atoms(resp, req, environ, request_time)
        for name in ("r", "f", "{referer}i"):
            if isinstance(atoms.get(name), str):
                atoms[name] = redact_url(atoms[name])
        if isinstance(atoms.get("q"), str):
            atoms["q"] = redact_query(atoms["q"])
        for name in SECRET_HEADERS & atoms.keys():
            atoms[name] = REDACTED
        return atoms
