"""The shipped demo corpus and its loopback HTTP server (``workers.lib.corpus``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import feedparser
import httpx
import pytest

from orchestrator.errors import ConfigError, DependencyUnavailable
from orchestrator.settings import Settings
from workers.lib import corpus
from workers.lib.corpus import CorpusServer, corpus_dir, ensure_corpus_server, is_corpus_url

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_corpus_is_small_and_every_feed_parses() -> None:
    files = [p for p in corpus_dir().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    sites = sorted(p.parent.name for p in corpus_dir().glob("sites/*/index.html"))
    assert 6 <= len(sites) <= 10
    feeds = [p for p in files if p.suffix in {".rss", ".atom"}]
    assert {p.suffix for p in feeds} == {".rss", ".atom"}
    for feed in feeds:
        parsed = feedparser.parse(feed.read_bytes())
        assert not parsed.bozo, feed
        assert 8 <= len(parsed.entries) <= 15, feed
    catalogue = (corpus_dir() / "index.html").read_text()
    assert all(f'href="sites/{site}/"' in catalogue for site in sites)


def test_the_package_ships_the_corpus() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["workers"]
    shipped = {p for pattern in patterns for p in (ROOT / "workers").glob(pattern) if p.is_file()}
    assert shipped == {p for p in corpus_dir().rglob("*") if p.is_file()}


def test_serves_pages_and_feeds_with_their_types(corpus_server: CorpusServer) -> None:
    with httpx.Client(base_url=corpus_server.url) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert "Voltage Weekly" in index.text
        rss = client.get("/sites/voltage-weekly/feed.rss")
        assert rss.headers["content-type"].startswith("application/rss+xml")
        atom = client.get("/sites/voltage-weekly/feed.atom")
        assert atom.headers["content-type"].startswith("application/atom+xml")
        assert client.get("/.corpus").json() == {"corpus": corpus.MARKER_NAME}
        for outside in ("/missing.html", "/../pyproject.toml", "/%2e%2e/pyproject.toml"):
            assert client.get(outside).status_code == 404


def test_conditional_get_answers_304(corpus_server: CorpusServer) -> None:
    url = "/sites/qubit-dispatch/feed.rss"
    with httpx.Client(base_url=corpus_server.url) as client:
        first = client.get(url)
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        by_etag = client.get(url, headers={"If-None-Match": etag})
        assert (by_etag.status_code, by_etag.content) == (304, b"")
        assert by_etag.headers["etag"] == etag
        by_date = client.get(url, headers={"If-Modified-Since": modified})
        assert by_date.status_code == 304
        stale = client.get(url, headers={"If-None-Match": '"other"', "If-Modified-Since": modified})
        assert stale.status_code == 200  # If-None-Match wins over If-Modified-Since
        assert stale.content == first.content


def test_ensure_serves_once_and_reuses(settings: Settings) -> None:
    port = free_port()
    local = settings.with_overrides(corpus_port=port)
    try:
        base = ensure_corpus_server(local)
        assert base == f"http://127.0.0.1:{port}"
        assert ensure_corpus_server(local) == base
        assert httpx.get(base + "/sites/tech-roundup/").status_code == 200
        assert is_corpus_url(base + "/sites/x/feed.rss", local)
        assert not is_corpus_url(f"http://127.0.0.1:{port + 1}/", local)
        assert not is_corpus_url(f"https://127.0.0.1:{port}/", local)
    finally:
        corpus._started.pop(port)[1].stop()


def test_ensure_reuses_a_corpus_served_by_another_process(settings: Settings) -> None:
    port = free_port()
    code = (
        "import sys, time\n"
        "from workers.lib.corpus import CorpusServer\n"
        f"CorpusServer({port}); print('up', flush=True); sys.stdin.read()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == b"up"
        base = ensure_corpus_server(settings.with_overrides(corpus_port=port))
        assert base == f"http://127.0.0.1:{port}"
        assert port not in corpus._started  # reused, not started here
    finally:
        other.communicate(b"", timeout=10)


def test_ensure_refuses_a_port_held_by_something_else(settings: Settings) -> None:
    class NotCorpus(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    squatter = ThreadingHTTPServer(("127.0.0.1", 0), NotCorpus)
    port = int(squatter.server_address[1])
    thread = threading.Thread(target=squatter.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(DependencyUnavailable, match="ORCH_CORPUS_PORT"):
            ensure_corpus_server(settings.with_overrides(corpus_port=port))
    finally:
        squatter.shutdown()
        squatter.server_close()


def test_corpus_port_setting() -> None:
    assert Settings.from_env({}).corpus_port == 8765
    assert Settings.from_env({"ORCH_CORPUS_PORT": "9100"}).corpus_port == 9100
    assert Settings.from_env({"ORCH_CORPUS_PORT": "9100"}).to_env()["ORCH_CORPUS_PORT"] == "9100"
    for bad in ("http", "0", "70000"):
        with pytest.raises(ConfigError, match="ORCH_CORPUS_PORT"):
            Settings.from_env({"ORCH_CORPUS_PORT": bad})
