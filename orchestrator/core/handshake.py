"""The handshake packet: what travels between stages instead of their data.

Field names are the plan's (SPEC fixes them). ``summary.continue`` is a Python keyword, so the
model calls it ``proceed`` and reads and writes it as ``continue``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: ``redis`` is the hot tier for small outputs (the plan's KV); ``s3`` is object storage
#: (the plan's R2); ``none`` is a stage that produced nothing.
StorageType = Literal["redis", "s3", "none"]


class _Packet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DataRef(_Packet):
    storage_type: StorageType
    storage_key: str
    size_bytes: int = Field(ge=0)
    checksum: str
    expires_at: datetime

    @classmethod
    def nothing(cls) -> DataRef:
        """The reference of a stage that wrote no output (skipped, cancelled, failed)."""
        return cls(
            storage_type="none", storage_key="", size_bytes=0, checksum="", expires_at=_now()
        )


class Summary(_Packet):
    items_processed: int = Field(default=0, ge=0)
    quality_score: float = 1.0
    errors: list[str] = Field(default_factory=list, max_length=20)
    proceed: bool = Field(default=True, alias="continue")


class NextStage(_Packet):
    worker: str | None = None
    action: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class HandshakePacket(_Packet):
    pipeline_id: str
    stage_id: str
    timestamp: datetime
    data_ref: DataRef
    summary: Summary = Field(default_factory=Summary)
    next: NextStage = Field(default_factory=NextStage)

    def to_wire(self) -> dict[str, Any]:
        """JSON-able dict with the SPEC's field names (``continue``, not ``proceed``)."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> HandshakePacket:
        return cls.model_validate(data)


def _now() -> datetime:
    return datetime.now(UTC)
