"""What the system tells about itself: no resolved address in a stage error, no dependency
details without a monitor key, no probe that hangs, no private address behind an IPv6 form,
no connection to an address other than the one checked."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from orchestrator.errors import ValidationFailed
from orchestrator.ops.supervisor import start_api
from orchestrator.settings import Settings
from tests.live import Api, free_port
from workers.lib.web import WebClient, check_url, is_public


@pytest.fixture
def strict() -> Settings:
    """Settings that refuse private addresses (the suite's own allow them)."""
    return Settings.from_env({}).with_overrides(allow_private_urls=False)


def test_a_refused_url_names_the_host_but_not_its_address(strict: Settings) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_url("http://localhost:9/feed.xml", strict)
    message = refused.value.message
    assert "localhost" in message and "private" in message
    assert "127.0.0.1" not in message and "::1" not in message


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:0:a00:1", False),  # IPv4-translated 10.0.0.1
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::808:808", False),  # local-use NAT64
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
        ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
        ("::ffff:8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("8.8.8.8", True),
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_private(address: str, public: bool) -> None:
    assert is_public(address) is public


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_transport_connects_only_to_an_address_it_checked(
    strict: Settings, loopback_server: int
) -> None:
    # A name that passed check_url and then re-resolves privately (DNS rebinding) reaches the
    # connect with a private answer: sending straight through the transport shows that the
    # connect checks the address it dials.
    with WebClient(strict) as client:
        for url in (f"http://127.0.0.1:{loopback_server}/", f"http://localhost:{loopback_server}/"):
            with pytest.raises(ValidationFailed, match="refused a connection to"):
                client.http.get(url)
    with WebClient(strict.with_overrides(allow_private_urls=True)) as client:
        assert client.http.get(f"http://localhost:{loopback_server}/").status_code == 200


def test_health_without_a_monitor_key_is_liveness_only(api_server: Api) -> None:
    assert api_server.call("GET", "/health", key=None).json() == {"status": "ok"}
    assert api_server.call("GET", "/health", key="client").json() == {"status": "ok"}
    detailed = api_server.call("GET", "/health", key="monitor").json()
    assert set(detailed["dependencies"]) == {"redis", "broker", "database", "object_storage"}
    bad_key = api_server.http.get("/health", headers={"Authorization": "Bearer nope"})
    assert bad_key.status_code == 401


@pytest.fixture
def frozen_s3() -> Iterator[str]:
    """An S3 endpoint that accepts connections and never answers, as a frozen server does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_health_answers_when_object_storage_freezes(
    api_server: Api, e2e_settings: Settings, frozen_s3: str
) -> None:
    process = start_api(e2e_settings.with_overrides(s3_endpoint=frozen_s3), port := free_port())
    try:
        url = f"http://127.0.0.1:{port}/health"
        public = httpx.get(url, timeout=20)  # the old probe retried for about 40 s
        assert public.status_code == 503 and public.json() == {"status": "degraded"}
        monitor = {"Authorization": f"Bearer {api_server.keys['monitor']}"}
        detailed = httpx.get(url, headers=monitor, timeout=20).json()["dependencies"]
        assert detailed["object_storage"]["status"] == "down"
        assert detailed["redis"]["status"] == "ok"
    finally:
        process.terminate()
        process.wait(15)
