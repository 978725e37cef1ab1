"""Object storage on the real embedded S3 server: checksums, streams, expiry, URLs, usage."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from datetime import timedelta

import httpx
import pytest
import redis

from orchestrator.constants import redis_key
from orchestrator.errors import ChecksumMismatch, DependencyUnavailable, ObjectMissing
from orchestrator.settings import Settings
from orchestrator.storage.objects import PART_SIZE, ObjectStore
from orchestrator.storage.outputs import INLINE_LIMIT_BYTES, Outputs


def _key() -> str:
    return f"tests/{uuid.uuid4().hex}"


def test_bytes_round_trip_with_checksum_and_expiry(object_store: ObjectStore) -> None:
    data = os.urandom(4096)
    stored = object_store.put_bytes(_key(), data, ttl=timedelta(hours=2))
    assert stored.size_bytes == len(data)
    assert stored.checksum == hashlib.sha256(data).hexdigest()
    assert object_store.get_bytes(stored.key, checksum=stored.checksum) == data
    headers = {k.lower(): v for k, v in object_store.stat(stored.key).items()}
    assert headers["x-amz-meta-sha256"] == stored.checksum
    assert headers["x-amz-meta-expires-at"] == stored.expires_at.isoformat()


def test_large_stream_goes_up_in_parts_and_is_verified(object_store: ObjectStore) -> None:
    data = os.urandom(2 * PART_SIZE + 12345)
    stored = object_store.put_stream(_key(), io.BytesIO(data))
    assert stored.size_bytes == len(data)
    assert stored.checksum == hashlib.sha256(data).hexdigest()
    assert object_store.exists(stored.key, checksum=stored.checksum)
    assert object_store.get_bytes(stored.key, checksum=stored.checksum) == data


def test_object_changed_behind_our_back_fails_the_read(object_store: ObjectStore) -> None:
    stored = object_store.put_bytes(_key(), b"the real output of a stage")
    # Overwrite the object with the raw client, as a buggy or malicious writer would.
    tampered = b"the real output of a stagE"
    object_store.client.put_object(
        object_store.bucket, stored.key, io.BytesIO(tampered), len(tampered)
    )
    with pytest.raises(ChecksumMismatch) as caught:
        object_store.get_bytes(stored.key, checksum=stored.checksum)
    assert caught.value.details["expected"] == stored.checksum
    assert caught.value.details["actual"] == hashlib.sha256(tampered).hexdigest()
    assert stored.key in str(caught.value)


def test_expired_and_missing_objects_are_reported(object_store: ObjectStore) -> None:
    expired = object_store.put_bytes(_key(), b"old", ttl=timedelta(seconds=-1))
    with pytest.raises(ObjectMissing, match="expired"):
        object_store.get_bytes(expired.key)
    assert not object_store.exists(expired.key)
    with pytest.raises(ObjectMissing, match="not found"):
        object_store.get_bytes(_key())


def test_presigned_url_downloads_without_credentials(object_store: ObjectStore) -> None:
    stored = object_store.put_bytes(_key(), b"<h1>report</h1>", content_type="text/html")
    url = object_store.presigned_url(stored.key, expires=timedelta(minutes=5))
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"<h1>report</h1>"
    assert response.headers["content-type"] == "text/html"


def test_bucket_is_created_on_first_use_and_usage_is_totalled(
    settings: Settings, object_store: ObjectStore
) -> None:
    store = ObjectStore(settings, bucket=f"orch-new-{uuid.uuid4().hex[:12]}")
    assert not store.client.bucket_exists(store.bucket)
    prefix = f"usage/{uuid.uuid4().hex}/"
    store.put_bytes(prefix + "a", b"x" * 100)
    store.put_bytes(prefix + "b", b"y" * 250)
    assert store.client.bucket_exists(store.bucket)
    assert store.usage(prefix) == {"objects": 2, "bytes": 350}


def test_unreachable_server_is_a_dependency_error(settings: Settings) -> None:
    store = ObjectStore(settings.with_overrides(s3_endpoint="127.0.0.1:1"))
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        store.put_bytes("k", b"v")


def test_outputs_read_many_in_one_trip_and_a_deferred_write_waits_for_its_pipeline(
    object_store: ObjectStore, redis_client: redis.Redis
) -> None:
    """Small outputs live in Redis, large ones in S3; a stage reads all its inputs at once,
    each verified, and its own small output appears only when its end pipeline runs."""
    outputs = Outputs(redis_client, object_store)
    ttl = timedelta(minutes=5)
    small = outputs.write(_key(), {"n": 1}, ttl=ttl)
    large = outputs.write(_key(), {"blob": "x" * (INLINE_LIMIT_BYTES + 1)}, ttl=ttl)
    raw = outputs.write(_key(), b"\x00\x01", ttl=ttl)
    none = outputs.write(_key(), None, ttl=ttl)
    assert (small.storage_type, large.storage_type, none.storage_type) == ("redis", "s3", "none")

    read = outputs.read_many({"a": small, "b": large, "c": raw, "d": none})
    assert read == {"a": {"n": 1}, "b": {"blob": "x" * (INLINE_LIMIT_BYTES + 1)},
                    "c": b"\x00\x01", "d": None}  # fmt: skip
    assert outputs.read(small) == {"n": 1}

    pipe = redis_client.pipeline(transaction=False)
    later = outputs.write(_key(), [1, 2, 3], ttl=ttl, pipe=pipe)
    with pytest.raises(ObjectMissing, match="is gone"):
        outputs.read(later)
    pipe.execute()
    assert outputs.read_many({"later": later, "a": small}) == {"later": [1, 2, 3], "a": {"n": 1}}

    redis_client.set(redis_key("out", small.storage_key), b'{"n":2}')  # changed behind our back
    with pytest.raises(ChecksumMismatch, match="does not match its checksum"):
        outputs.read_many({"later": later, "a": small})
