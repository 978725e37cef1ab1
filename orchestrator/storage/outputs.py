"""Stage outputs in two tiers: small ones in Redis (the plan's KV), the rest in S3 (its R2).

Both tiers carry a SHA-256 that the reader verifies, so a packet is a trustworthy reference
whichever tier holds the bytes. Outputs are JSON; ``bytes`` are stored as they are.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from orchestrator.constants import redis_key
from orchestrator.core.handshake import DataRef
from orchestrator.errors import ChecksumMismatch, ObjectMissing, ValidationFailed
from orchestrator.storage.objects import ObjectStore

#: Outputs up to this size stay in Redis: a round trip instead of an S3 request.
INLINE_LIMIT_BYTES = 64 * 1024
BINARY_SUFFIX = ".bin"


def encode(output: Any) -> tuple[bytes, str]:
    """Output as bytes and the key suffix that says how to decode it."""
    if isinstance(output, bytes | bytearray):
        return bytes(output), BINARY_SUFFIX
    try:
        return json.dumps(output, separators=(",", ":"), default=str).encode(), ".json"
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"stage output is not JSON-serialisable: {exc}") from exc


def decode(data: bytes, key: str) -> Any:
    return data if key.endswith(BINARY_SUFFIX) else json.loads(data)


class Outputs:
    """Writes and reads stage outputs by reference."""

    def __init__(self, client: redis.Redis, store: ObjectStore) -> None:
        self.redis = client
        self.store = store

    def write(self, key_stem: str, output: Any, *, ttl: timedelta, pipe: Any = None) -> DataRef:
        """Store ``output``; with ``pipe`` (a Redis pipeline), a small output's write is only
        queued on it: whoever runs the pipeline makes it readable (a stage's end, before the
        packet that points to it, saving a round trip)."""
        if output is None:
            return DataRef(
                storage_type="none",
                storage_key="",
                size_bytes=0,
                checksum="",
                expires_at=datetime.now(UTC) + ttl,
            )
        data, suffix = encode(output)
        key = key_stem + suffix
        if len(data) <= INLINE_LIMIT_BYTES:
            expires_at = datetime.now(UTC) + ttl
            client = pipe if pipe is not None else self.redis
            client.set(redis_key("out", key), data, ex=int(ttl.total_seconds()))
            checksum = hashlib.sha256(data).hexdigest()
            return DataRef(
                storage_type="redis",
                storage_key=key,
                size_bytes=len(data),
                checksum=checksum,
                expires_at=expires_at,
            )
        stored = self.store.put_bytes(key, data, ttl=ttl)
        return DataRef(
            storage_type="s3",
            storage_key=stored.key,
            size_bytes=stored.size_bytes,
            checksum=stored.checksum,
            expires_at=stored.expires_at,
        )

    def read(self, ref: DataRef) -> Any:
        """The output a reference points to, verified against its checksum."""
        return self.read_many({"": ref})[""]

    def read_many(self, refs: dict[str, DataRef]) -> dict[str, Any]:
        """``read`` of each reference; the small ones (in Redis) in one round trip."""
        small = [name for name, ref in refs.items() if ref.storage_type == "redis"]
        keys = [redis_key("out", refs[name].storage_key) for name in small]
        held = dict(zip(small, self.redis.mget(keys), strict=True)) if small else {}
        return {name: self._verified(ref, held.get(name)) for name, ref in refs.items()}

    def _verified(self, ref: DataRef, held: Any) -> Any:
        if ref.storage_type == "none":
            return None
        if ref.storage_type == "s3":
            return decode(
                self.store.get_bytes(ref.storage_key, checksum=ref.checksum), ref.storage_key
            )
        data = _as_bytes(held)
        if data is None:
            raise ObjectMissing(f"output {ref.storage_key!r} is gone (expired or Redis restarted)")
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.checksum:
            raise ChecksumMismatch(
                f"output {ref.storage_key!r} does not match its checksum",
                details={"key": ref.storage_key, "expected": ref.checksum, "actual": actual},
            )
        return decode(data, ref.storage_key)

    def available(self, ref: DataRef) -> bool:
        """True if the output is still there with its checksum (checkpoint verification)."""
        if ref.storage_type == "none":
            return True
        if ref.expires_at < datetime.now(UTC):
            return False
        if ref.storage_type == "s3":
            return self.store.exists(ref.storage_key, checksum=ref.checksum)
        data = _as_bytes(self.redis.get(redis_key("out", ref.storage_key)))
        return data is not None and hashlib.sha256(data).hexdigest() == ref.checksum


def _as_bytes(value: object) -> bytes | None:
    """A Redis value as bytes (this client never decodes responses)."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()
