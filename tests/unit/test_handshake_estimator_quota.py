"""Handshake packets, estimates and quota arithmetic: pure functions, tables of cases."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.core import quota
from orchestrator.core.estimator import critical_path_ms
from orchestrator.core.handshake import HandshakePacket
from orchestrator.core.templates import bind, parse_template

PACKET = {
    "pipeline_id": "exec_1",
    "stage_id": "fetch",
    "timestamp": "2026-11-24T10:00:00Z",
    "data_ref": {
        "storage_type": "s3",
        "storage_key": "outputs/x.json",
        "size_bytes": 10,
        "checksum": "ab" * 32,
        "expires_at": "2026-12-01T00:00:00Z",
    },
    "summary": {"items_processed": 3, "quality_score": 0.9, "errors": [], "continue": False},
    "next": {"worker": "content_classifier", "action": "classify", "params": {}},
}


def test_packet_round_trips_with_the_spec_names() -> None:
    packet = HandshakePacket.from_wire(PACKET)
    assert packet.summary.proceed is False
    wire = packet.to_wire()
    assert wire["summary"]["continue"] is False and "proceed" not in wire["summary"]
    assert set(wire) == {"pipeline_id", "stage_id", "timestamp", "data_ref", "summary", "next"}
    assert set(wire["data_ref"]) == {
        "storage_type",
        "storage_key",
        "size_bytes",
        "checksum",
        "expires_at",
    }


@pytest.mark.parametrize(
    "broken",
    [
        {**PACKET, "data_ref": {**PACKET["data_ref"], "storage_type": "D1"}},
        {**PACKET, "data_ref": {**PACKET["data_ref"], "size_bytes": -1}},
        {**PACKET, "extra": 1},
        {k: v for k, v in PACKET.items() if k != "data_ref"},
    ],
)
def test_bad_packets_are_refused(broken: dict) -> None:
    with pytest.raises(ValidationError):
        HandshakePacket.from_wire(broken)


def _stages():
    return bind(
        parse_template(
            {
                "name": "e",
                "stages": [
                    {
                        "id": "a",
                        "worker": "w",
                        "action": "x",
                        "estimate": {"time_ms": 100, "cost_usd": 0.01},
                    },
                    {
                        "id": "b",
                        "worker": "w",
                        "action": "y",
                        "depends_on": ["a"],
                        "estimate": {"time_ms": 500},
                        "resources": {"openai_api": 1000},
                    },
                    {
                        "id": "c",
                        "worker": "w",
                        "action": "x",
                        "depends_on": ["a"],
                        "estimate": {"time_ms": 200, "cost_usd": 0.02},
                    },
                    {
                        "id": "d",
                        "worker": "w",
                        "action": "x",
                        "depends_on": ["b", "c"],
                        "estimate": {"time_ms": 50},
                    },
                ],
            }
        ),
        {},
    )


def test_critical_path_takes_the_longest_branch() -> None:
    assert critical_path_ms(_stages()) == 100 + 500 + 50


@pytest.mark.parametrize(
    ("when", "ymd"),
    [
        (dt.datetime(1970, 1, 1), (1970, 1, 1)),
        (dt.datetime(2024, 2, 29, 23, 59), (2024, 2, 29)),
        (dt.datetime(2026, 12, 31, 23, 59, 59), (2026, 12, 31)),
        (dt.datetime(2100, 3, 1), (2100, 3, 1)),
    ],
)
def test_calendar_windows(when: dt.datetime, ymd: tuple[int, int, int]) -> None:
    ms = int(when.replace(tzinfo=dt.UTC).timestamp() * 1000)
    assert quota.civil_from_days(quota.day_window(ms)) == ymd
    assert quota.month_window(ms) == ymd[0] * 12 + ymd[1] - 1


@given(st.integers(min_value=0, max_value=4_000_000_000_000))
def test_windows_agree_with_datetime(ms: int) -> None:
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    assert quota.civil_from_days(quota.day_window(ms)) == (when.year, when.month, when.day)
    assert quota.days_from_civil(when.year, when.month, when.day) == quota.day_window(ms)
    to_month = quota.ms_until_next_month(ms)
    nxt = dt.datetime.fromtimestamp((ms + to_month) / 1000, dt.UTC)
    assert nxt.day == 1 and nxt.hour == 0 and 0 < to_month <= 31 * quota.DAY_MS


@given(st.lists(st.floats(min_value=0, max_value=120_000), min_size=1, max_size=200))
def test_gcra_never_admits_more_than_the_rate_in_a_minute(offsets: list[float]) -> None:
    gcra = quota.Gcra(rate_per_minute=30)
    tat = None
    admitted = []
    for now in sorted(offsets):
        new_tat, wait = gcra.attempt(tat, now)
        if wait == 0:
            tat = new_tat
            admitted.append(now)
    for start in admitted:
        in_window = [t for t in admitted if start <= t < start + quota.MINUTE_MS]
        assert len(in_window) <= 30


def test_shortfalls_name_resource_window_and_when() -> None:
    now = int(dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp() * 1000)
    found = quota.shortfalls({"api": 600}, {("api", "day"): 500.0}, {"api": (1000, None)}, now)
    assert len(found) == 1 and found[0].window == "day" and not found[0].never_fits
    assert found[0].retry_after_ms == 12 * 3600 * 1000
    never = quota.shortfalls({"api": 2000}, {}, {"api": (1000, 50_000)}, now)
    assert never[0].never_fits
    assert quota.refund(100, 30) == 70
