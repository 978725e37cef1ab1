"""The shipped demo corpus (``workers/corpus/``), served over real HTTP on loopback.

The feed workers fetch it like any site, so the demo and the tests exercise the same code path
as real feeds: HTML discovery, conditional GET with ETag and Last-Modified, size caps. A run
started from any process works with no server to start by hand: the first worker that needs
the corpus calls ``ensure_corpus_server``, which reuses a corpus already answering on
``Settings.corpus_port`` (any process may have started it) or serves it from a daemon thread.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import threading
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from orchestrator.errors import DependencyUnavailable

if TYPE_CHECKING:
    from orchestrator.settings import Settings

log = logging.getLogger(__name__)

#: The corpus is only ever served on loopback.
CORPUS_HOST = "127.0.0.1"
#: A path no real site has: answering it with our name is how a running corpus is recognised.
MARKER_PATH = "/.corpus"
MARKER_NAME = "orchestrator-demo-corpus"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
}


def corpus_dir() -> Path:
    """Where the corpus files are: package data of ``workers``, so installs ship it."""
    return Path(str(files("workers").joinpath("corpus")))


def corpus_base_url(settings: Settings) -> str:
    """``http://127.0.0.1:<corpus_port>``: the one origin the workers trust on loopback."""
    return f"http://{CORPUS_HOST}:{settings.corpus_port}"


def is_corpus_url(url: str, settings: Settings) -> bool:
    """Whether ``url`` is on exactly the corpus origin (scheme, host and port)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return parts.scheme == "http" and parts.hostname == CORPUS_HOST and port == settings.corpus_port


class CorpusHandler(BaseHTTPRequestHandler):
    """Static files with validators; answers 304 when the client's copy is current."""

    server_version = "OrchestratorCorpus/1"
    root: Path

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == MARKER_PATH:
            data = json.dumps({"corpus": MARKER_NAME}).encode()
            return self._send(200, data, "application/json", body=body)
        file = self._resolve(path)
        if file is None:
            return self._send(404, b"not found\n", "text/plain; charset=utf-8", body=body)
        data = file.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        mtime = int(file.stat().st_mtime)
        headers = {"ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True)}
        if self._not_modified(etag, mtime):
            return self._send(304, b"", None, headers, body=False)
        content_type = CONTENT_TYPES.get(file.suffix, "application/octet-stream")
        self._send(200, data, content_type, headers, body=body)

    def _resolve(self, path: str) -> Path | None:
        """The file a URL path names, never anything outside the corpus directory."""
        relative = path.lstrip("/")
        if not relative or relative.endswith("/"):
            relative += "index.html"
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        if any(part.startswith(".") for part in candidate.relative_to(self.root).parts):
            return None
        return candidate

    def _not_modified(self, etag: str, mtime: int) -> bool:
        """RFC 9110: If-None-Match wins; If-Modified-Since only when it is absent."""
        if (match := self.headers.get("If-None-Match")) is not None:
            tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
            return "*" in tags or etag in tags
        if since := self.headers.get("If-Modified-Since"):
            try:
                return mtime <= parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return False
        return False

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
        *,
        body: bool,
    ) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-cache")
        if status != 304:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("corpus: " + format, *args)


class CorpusServer:
    """A running corpus server: a ``ThreadingHTTPServer`` on its own daemon thread."""

    def __init__(self, port: int, root: Path | None = None) -> None:
        handler = type("Handler", (CorpusHandler,), {"root": (root or corpus_dir()).resolve()})
        self.httpd = ThreadingHTTPServer((CORPUS_HOST, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{CORPUS_HOST}:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"corpus-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def answers_as_corpus(port: int, *, timeout_s: float = 2.0) -> bool:
    """Whether our corpus answers on ``port`` (plain http.client: no proxy is ever involved)."""
    connection = http.client.HTTPConnection(CORPUS_HOST, port, timeout=timeout_s)
    try:
        connection.request("GET", MARKER_PATH)
        response = connection.getresponse()
        return response.status == 200 and json.loads(response.read()).get("corpus") == MARKER_NAME
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return False
    finally:
        connection.close()


_lock = threading.Lock()
#: Servers this process started, by port, with the pid that started them (a fork loses them).
_started: dict[int, tuple[int, CorpusServer]] = {}


def ensure_corpus_server(settings: Settings) -> str:
    """The corpus base URL, serving it from this process if nothing answers on the port yet."""
    port = settings.corpus_port
    with _lock:
        held = _started.get(port)
        if held is not None and held[0] == os.getpid():
            return held[1].url
        if answers_as_corpus(port):
            return corpus_base_url(settings)
        try:
            server = CorpusServer(port)
        except OSError as exc:  # another process bound it first, or something else holds it
            if answers_as_corpus(port):
                return corpus_base_url(settings)
            raise DependencyUnavailable(
                f"ORCH_CORPUS_PORT: port {port} is taken by something that is not the demo "
                f"corpus ({exc.strerror or exc}); set ORCH_CORPUS_PORT to a free port",
                details={"variable": "ORCH_CORPUS_PORT", "port": port},
            ) from exc
        _started[port] = (os.getpid(), server)
        log.info("serving the demo corpus on %s", server.url)
        return server.url
