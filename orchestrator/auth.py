"""API keys: made once, shown once, stored as a SHA-256 hash, looked up by that hash.

A key reads ``orch_<scope>_<random>``; the scope in it is only a hint for people, the stored
row is what counts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from orchestrator.db import ApiKey, Database
from orchestrator.errors import Forbidden, NotFound, Unauthorized, ValidationFailed


class Scope(StrEnum):
    CLIENT = "client"
    MONITOR = "monitor"
    WORKER = "worker"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, scope and the client (or worker) it speaks for."""

    key_id: str
    scope: Scope
    client_id: str | None

    def require(self, *scopes: Scope) -> None:
        if self.scope is not Scope.ADMIN and self.scope not in scopes:
            wanted = " or ".join(s.value for s in scopes)
            article = "an" if wanted[0] in "aeiou" else "a"
            raise Forbidden(
                f"this endpoint needs {article} {wanted} key; this key is {self.scope.value}"
            )

    def sees_everything(self) -> bool:
        return self.scope in {Scope.ADMIN, Scope.MONITOR}


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


#: The longest client id or key label (the database keeps 200 characters).
MAX_NAME = 200


def _fits(value: str) -> bool:
    return 0 < len(value) <= MAX_NAME and value.isprintable() and value == value.strip()


def create_key(
    database: Database, scope: Scope, *, client_id: str | None = None, label: str | None = None
) -> str:
    """A new key; the only time its secret exists outside the caller's hands is this return."""
    scope = Scope(scope)
    if scope in {Scope.CLIENT, Scope.WORKER} and not client_id:
        raise ValidationFailed(
            f"a {scope.value} key needs --client-id (the {scope.value} it speaks for)"
        )
    for option, value in (("--client-id", client_id), ("--label", label)):
        if value is not None and not _fits(value):
            raise ValidationFailed(
                f"{option} must be 1 to {MAX_NAME} printable characters, without spaces "
                f"around them (got {len(value)} characters)"
            )
    key = f"orch_{scope.value}_{secrets.token_urlsafe(32)}"
    with database.session() as session:
        session.add(
            ApiKey(
                key_id=secrets.token_hex(8),
                key_hash=_hash(key),
                scope=scope.value,
                client_id=client_id,
                label=label,
            )
        )
    return key


#: ``last_used_at`` is kept to the minute: every request writing it cost a database commit
#: (on the path of each submit and each progress stream).
LAST_USED_PRECISION = timedelta(minutes=1)


def authenticate(database: Database, header: str | None) -> Principal:
    """The principal behind an ``Authorization: Bearer <key>`` header."""
    if not header:
        raise Unauthorized("missing Authorization: Bearer <key> header")
    kind, _, key = header.partition(" ")
    if kind.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    digest = _hash(key.strip())
    with database.session() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
        # The lookup is by hash; compare again in constant time so a timing side channel on
        # the index cannot be turned into a match.
        if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
            raise Unauthorized("unknown or revoked API key")
        now = datetime.now(UTC)
        last = row.last_used_at
        if last is None or now - last.replace(tzinfo=last.tzinfo or UTC) > LAST_USED_PRECISION:
            row.last_used_at = now  # a write per minute and key, not per request
        return Principal(row.key_id, Scope(row.scope), row.client_id)


def list_keys(database: Database) -> list[dict[str, Any]]:
    """Every key's id, scope, client, label and dates; never a secret or its hash."""
    with database.session() as session:
        rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
        return [
            {
                "key_id": row.key_id,
                "scope": row.scope,
                "client_id": row.client_id,
                "label": row.label,
                "created_at": _iso(row.created_at),
                "last_used_at": _iso(row.last_used_at),
                "revoked_at": _iso(row.revoked_at),
            }
            for row in rows
        ]


def revoke_key(database: Database, key: str) -> str:
    """Revoke a key, named by its id or by the key itself; returns its id. From now on it
    authenticates nothing; revoking twice changes nothing."""
    with database.session() as session:
        row = session.get(ApiKey, key) or session.scalar(
            select(ApiKey).where(ApiKey.key_hash == _hash(key))
        )
        if row is None:
            raise NotFound(f"no API key {key[:24]!r}")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
        return row.key_id


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
