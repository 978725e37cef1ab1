"""Object storage through the ``minio`` client: outputs, deliverables, checksums, expiry.

Every object carries its SHA-256 and expiry as metadata; a ``StoredObject`` (the handshake's
``data_ref``) carries the same checksum, and reads verify against it, so an object changed
behind our back fails loudly instead of feeding a stage wrong data.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error

from orchestrator.errors import ChecksumMismatch, DependencyUnavailable, ObjectMissing, StorageError
from orchestrator.settings import Settings

#: Objects above this size go up in parts of this size (S3's minimum part is 5 MiB).
PART_SIZE = 8 * 1024 * 1024
CHECKSUM_META = "sha256"
EXPIRES_META = "expires-at"


@dataclass(frozen=True)
class StoredObject:
    """Where an object is and what it must hash to."""

    key: str
    size_bytes: int
    checksum: str
    expires_at: datetime


class _HashingReader(io.RawIOBase):
    """Wraps a stream, hashing and counting what the uploader reads from it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return chunk


def _meta(headers: dict[str, str], name: str) -> str | None:
    wanted = f"x-amz-meta-{name}"
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


class ObjectStore:
    """One bucket of an S3-compatible server; the bucket is created on first use."""

    def __init__(
        self,
        settings: Settings,
        *,
        bucket: str | None = None,
        timeout: urllib3.Timeout | None = None,
        retries: int = 2,
    ) -> None:
        self.bucket = bucket or settings.s3_bucket
        self.default_ttl = timedelta(seconds=settings.output_ttl_s)
        http = urllib3.PoolManager(
            timeout=timeout or urllib3.Timeout(connect=3, read=60),
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=(502, 503, 504)
            ),
            maxsize=16,
        )
        self.client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            http_client=http,
        )
        self._bucket_ready = False

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        ttl: timedelta | None = None,
    ) -> StoredObject:
        """Store ``data`` under ``key`` with its checksum and expiry as metadata."""
        checksum = hashlib.sha256(data).hexdigest()
        expires_at = datetime.now(UTC) + (ttl or self.default_ttl)
        self._call(
            self.client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=self._metadata(checksum, expires_at),
        )
        return StoredObject(key, len(data), checksum, expires_at)

    def put_stream(
        self,
        key: str,
        stream: BinaryIO,
        *,
        content_type: str = "application/octet-stream",
        ttl: timedelta | None = None,
    ) -> StoredObject:
        """Stream an object of unknown length up in parts, hashing on the way.

        The checksum is known only at the end, so it is stamped by a server-side copy onto
        itself, which S3 does without moving the bytes through us.
        """
        reader = _HashingReader(stream)
        expires_at = datetime.now(UTC) + (ttl or self.default_ttl)
        self._call(
            self.client.put_object,
            self.bucket,
            key,
            reader,
            -1,
            content_type=content_type,
            part_size=PART_SIZE,
        )
        checksum = reader.sha256.hexdigest()
        self._call(
            self.client.copy_object,
            self.bucket,
            key,
            CopySource(self.bucket, key),
            metadata={**self._metadata(checksum, expires_at), "Content-Type": content_type},
            metadata_directive=REPLACE,
        )
        return StoredObject(key, reader.size, checksum, expires_at)

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str, *, checksum: str | None = None) -> bytes:
        """Read a whole object, verifying it against ``checksum`` (or its own metadata)."""
        return b"".join(self.iter_chunks(key, checksum=checksum))

    def iter_chunks(
        self, key: str, *, checksum: str | None = None, chunk_size: int = 1024 * 1024
    ) -> Iterator[bytes]:
        """Stream an object; the checksum is verified when the last chunk has been read."""
        headers = self.stat(key)
        expected = checksum or _meta(headers, CHECKSUM_META)
        response = self._call(self.client.get_object, self.bucket, key)
        digest = hashlib.sha256()
        try:
            for chunk in response.stream(chunk_size):
                digest.update(chunk)
                yield chunk
        finally:
            response.close()
            response.release_conn()
        if expected and digest.hexdigest() != expected:
            raise ChecksumMismatch(
                f"object {key!r} does not match its checksum: expected {expected}, "
                f"read {digest.hexdigest()}",
                details={"key": key, "expected": expected, "actual": digest.hexdigest()},
            )

    def stat(self, key: str) -> dict[str, str]:
        """The object's headers; ``ObjectMissing`` if it is gone or past its expiry."""
        info = self._call(self.client.stat_object, self.bucket, key)
        headers = dict(info.metadata or {})
        expires = _meta(headers, EXPIRES_META)
        if expires and datetime.fromisoformat(expires) < datetime.now(UTC):
            raise ObjectMissing(f"object {key!r} expired at {expires}", details={"key": key})
        return headers

    def exists(self, key: str, *, checksum: str | None = None) -> bool:
        """True if the object is there, unexpired and (given one) carries ``checksum``."""
        try:
            headers = self.stat(key)
        except ObjectMissing:
            return False
        return checksum is None or _meta(headers, CHECKSUM_META) == checksum

    def presigned_url(self, key: str, *, expires: timedelta = timedelta(hours=1)) -> str:
        """A time-limited download URL that needs no credentials."""
        self.stat(key)
        return self._call(self.client.presigned_get_object, self.bucket, key, expires=expires)

    def delete(self, key: str) -> None:
        self._call(self.client.remove_object, self.bucket, key)

    def listing(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every object's key and size under ``prefix`` (housekeeping walks the bucket)."""
        for obj in self._call(self.client.list_objects, self.bucket, prefix=prefix, recursive=True):
            yield obj.object_name, obj.size or 0

    def expires_at(self, key: str) -> datetime | None:
        """The expiry stamped on the object, expired or not; None if it has none."""
        info = self._call(self.client.stat_object, self.bucket, key)
        stamped = _meta(dict(info.metadata or {}), EXPIRES_META)
        return datetime.fromisoformat(stamped) if stamped else None

    def usage(self, prefix: str = "") -> dict[str, int]:
        """Object count and total bytes under ``prefix`` (for ``GET /resources``)."""
        count = total = 0
        for obj in self._call(self.client.list_objects, self.bucket, prefix=prefix, recursive=True):
            count += 1
            total += obj.size or 0
        return {"objects": count, "bytes": total}

    def ping(self) -> None:
        """Raise ``DependencyUnavailable`` unless the server answers and the bucket exists."""
        self._ensure_bucket()

    # -- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _metadata(checksum: str, expires_at: datetime) -> dict[str, str]:
        return {
            f"x-amz-meta-{CHECKSUM_META}": checksum,
            f"x-amz-meta-{EXPIRES_META}": expires_at.isoformat(),
        }

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise DependencyUnavailable(f"object storage unreachable: {exc}") from exc
        except S3Error as exc:
            raise StorageError(f"object storage refused bucket {self.bucket!r}: {exc}") from exc
        self._bucket_ready = True

    def _call(self, method, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run one client call, translating its errors into the product's."""
        self._ensure_bucket()
        try:
            return method(*args, **kwargs)
        except S3Error as exc:
            if exc.code in {"NoSuchKey", "NoSuchObject", "NotFound"}:
                key = args[1] if len(args) > 1 else "?"
                raise ObjectMissing(f"object {key!r} not found", details={"key": key}) from exc
            raise StorageError(f"object storage error: {exc.code}: {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise DependencyUnavailable(f"object storage unreachable: {exc}") from exc
