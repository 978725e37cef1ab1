"""HTTP for the feed workers: which URLs may be fetched, and fetching them politely.

Feed and catalogue URLs come from users, so every request, redirects included, goes through
``check_url`` first: only http(s) to public addresses, unless ``Settings.allow_private_urls``.
The one loopback exception is the shipped corpus origin (``workers.lib.corpus``), and only
that exact scheme, host and port. Addresses are checked after resolving the name, every one
of them, and the connection is made to an address checked by the connect itself (``Pinned``):
a name that re-resolves to a private address between the check and the connect (DNS rebinding)
is refused there too. IPv6 addresses that carry an IPv4 one (mapped, 6to4, NAT64, Teredo,
IPv4-compatible) are judged by that IPv4 address as well. Errors name the URL and the host,
never the address it resolved to: a stage error must not turn the workers into a resolver of
internal names.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit
from urllib.request import getproxies

import certifi
import httpcore
import httpx

from orchestrator.constants import redis_key
from orchestrator.errors import StageFailed, TransientStageError, ValidationFailed
from workers.lib.corpus import corpus_base_url, is_corpus_url

if TYPE_CHECKING:
    import redis

    from orchestrator.settings import Settings

USER_AGENT = "OrchestratorFeedFetcher/1.0 (market-research demo; polite, caches validators)"
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Bodies are streamed and abandoned past this size (a feed is rarely above a few hundred KB).
MAX_BYTES = 2 * 2**20
MAX_REDIRECTS = 5
#: Default minimum interval between two requests to one host, across every worker process.
HOST_INTERVAL_S = 1.0
#: Longest a request waits for its turn at a busy host before going anyway.
MAX_PACING_WAIT_S = 30.0
REDIRECTS = {301, 302, 303, 307, 308}


def check_url(url: str, settings: Settings) -> None:
    """Raise ``ValidationFailed`` unless ``url`` may be fetched; no traffic to the target."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationFailed(f"refused {url!r}: only http(s) URLs with a host are fetched")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValidationFailed(f"refused {url!r}: bad port") from None
    if settings.allow_private_urls or is_corpus_url(url, settings):
        return
    public_addresses(parts.hostname, port, what=repr(url))


def public_addresses(host: str, port: int, *, what: str) -> list[str]:
    """Every address ``host`` resolves to, all public, or ``ValidationFailed`` naming ``what``
    and the host (never the address: that would answer lookups of internal names)."""
    addresses = _addresses(host, port)
    if not all(is_public(address) for address in addresses):
        raise ValidationFailed(
            f"refused {what}: {host} is or resolves to a private, loopback, link-local or "
            "reserved address; set ORCH_ALLOW_PRIVATE_URLS=true to allow it"
        )
    return addresses


def _addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself, offline)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise TransientStageError(f"cannot resolve {host} now: {exc.strerror}") from exc
        raise StageFailed(f"cannot resolve {host}: {exc.strerror}") from exc
    return sorted({str(info[4][0]) for info in infos})


#: NAT64 prefixes: the well-known one embeds an IPv4 address in its last 32 bits; the
#: local-use one (RFC 8215) reaches whatever the operator's translator reaches.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable unicast, and so is every IPv4 address an
    IPv6 one carries (a 6to4 ``2002:7f00:1::1`` is 127.0.0.1 to a 6to4 relay)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded and not all(_is_public_ip(v4) for v4 in embedded):
            return False
        if ip.ipv4_mapped is not None:
            return True  # judged by its IPv4 address alone
    return _is_public_ip(ip)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    high = ip.packed[:12]
    if ip in NAT64 or high == bytes(12) or high == bytes(8) + b"\xff\xff\x00\x00":
        # NAT64, IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d)
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    return found


def _is_public_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


class PinnedBackend(httpcore.SyncBackend):
    """Connects to an address it has checked itself, never to a name resolved again later:
    the check and the connect see the same answer, so DNS rebinding cannot slip between
    them. TLS still verifies the certificate for the URL's host name (httpcore sends it as
    the server name)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        if not self.settings.allow_private_urls:
            host = public_addresses(host, port, what=f"a connection to {host}:{port}")[0]
        return super().connect_tcp(host, port, timeout, local_address, socket_options)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over ``PinnedBackend``. httpx takes no network backend, so the pool
    it built is replaced by one with the same defaults and that backend."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=PinnedBackend(settings),
        )


class Pacer(Protocol):
    """Politeness: wait until ``host`` may be sent another request; return seconds waited."""

    def wait(self, host: str, interval_s: float) -> float: ...


class RedisPacer:
    """Per-host minimum interval shared by every process: a ``SET NX PX`` ticket per host."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def wait(self, host: str, interval_s: float) -> float:
        if interval_s <= 0:
            return 0.0
        key = redis_key("politeness", host)
        waited, ms = 0.0, max(1, int(interval_s * 1000))
        while not self.client.set(key, b"1", nx=True, px=ms):
            if waited >= MAX_PACING_WAIT_S:
                break
            pause = max(int(self.client.pttl(key)), 1) / 1000
            time.sleep(pause)
            waited += pause
        return waited


@functools.cache
def _redis(url: str, pid: int) -> redis.Redis:
    import redis

    return redis.Redis.from_url(url, health_check_interval=30)


def shared_redis(settings: Settings) -> redis.Redis:
    """This process's Redis client for worker-side state (built on first use, after a fork)."""
    return _redis(settings.redis_url, os.getpid())


@dataclass(frozen=True)
class Validators:
    """What a conditional GET sends back: the ETag and Last-Modified of the copy we hold."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True)
class Fetched:
    """A response: 200 with its body, or 304 (the copy behind the validators is current)."""

    url: str
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def validators(self) -> Validators:
        return Validators(self.headers.get("etag"), self.headers.get("last-modified"))


class WebClient:
    """An httpx client behind the URL policy, politeness, a size cap and a request count."""

    def __init__(
        self,
        settings: Settings,
        *,
        pacer: Pacer | None = None,
        host_interval_s: float | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.settings = settings
        self.pacer = pacer
        self.host_interval_s = host_interval_s
        self.max_bytes = max_bytes
        #: HTTP requests sent (redirect hops and 304s included): reported as ``feed_requests``.
        self.requests = 0
        # Environment proxies apply to the world, never to the loopback corpus. Without a
        # proxy, connections go only to addresses the transport checked itself; with one, the
        # proxy resolves names (httpx uses the environment's proxies only without a transport).
        corpus = httpx.HTTPTransport()
        self.http = httpx.Client(
            timeout=TIMEOUT,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            transport=None if getproxies() else PinnedTransport(settings),
            mounts={corpus_base_url(settings): corpus},
        )

    def __enter__(self) -> WebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(
        self, url: str, *, validators: Validators | None = None, max_bytes: int | None = None
    ) -> Fetched:
        """GET ``url`` (conditionally when ``validators`` are given), checking every hop."""
        cap = max_bytes or self.max_bytes
        headers = validators.headers() if validators else {}
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, self.settings)
            self._pace(url)
            try:
                fetched = self._get_once(url, headers, cap)
            except httpx.TimeoutException as exc:
                raise TransientStageError(f"timed out fetching {url}") from exc
            except httpx.HTTPError as exc:
                raise TransientStageError(f"cannot fetch {url}: {exc}") from exc
            if fetched.status not in REDIRECTS:
                return fetched
            location = fetched.headers.get("location")
            if not location:
                raise StageFailed(f"{url} redirected (HTTP {fetched.status}) with no Location")
            url = urljoin(url, location)
        raise StageFailed(f"more than {MAX_REDIRECTS} redirects from {url}")

    def _pace(self, url: str) -> None:
        if self.pacer is None:
            return
        interval = self.host_interval_s
        if interval is None:  # politeness protects other people's servers, not our corpus
            interval = 0.0 if is_corpus_url(url, self.settings) else HOST_INTERVAL_S
        self.pacer.wait(urlsplit(url).netloc.lower(), interval)

    def _get_once(self, url: str, headers: dict[str, str], cap: int) -> Fetched:
        self.requests += 1
        with self.http.stream("GET", url, headers=headers) as response:
            status, got = response.status_code, {k.lower(): v for k, v in response.headers.items()}
            if status in REDIRECTS or status == 304:
                return Fetched(str(response.url), status, b"", got)
            if status == 429 or status >= 500:
                retry_after = got.get("retry-after", "")
                raise TransientStageError(
                    f"HTTP {status} from {url}",
                    retry_after_s=float(retry_after) if retry_after.isdigit() else None,
                )
            if status >= 400:
                raise StageFailed(f"HTTP {status} from {url}")
            declared = got.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise StageFailed(f"{url} is {declared} bytes, over the {cap}-byte cap")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise StageFailed(f"{url} is over the {cap}-byte cap (stopped reading)")
                chunks.append(chunk)
            return Fetched(str(response.url), status, b"".join(chunks), got)
