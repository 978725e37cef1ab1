"""The coordinator's admission cost as the number of waiting runs grows (10 ... 10,000).

A resource of 1 unit per day is held by one run; N more runs wait for it in the priority
queue. Measured, median of ``REPEATS`` calls each (the best of ``ROUNDS`` rounds: other work on
the machine only ever slows a round down), on a private Redis DB (8):
- ``reserve``: a new run that cannot fit asks and is queued (the door's decision);
- ``release -> admit``: the holder releases and the queue's head is admitted (what a
  finishing run pays, the admission decision of the waiting runs);
- ``admit_pending (none fits)``: a pass of the reconciler that finds nothing fits (the head
  is short of the pool's only resource, so nothing behind it could go: the pass stops there);
- ``admit_pending (full scan)``: the worst pass, with a second resource in the pool: no
  waiting run fits, yet each could as far as that one goes, so backfilling looks at every
  run it may (``admission.backfill_depth``, 100, past the head) before it gives up;
- ``reserve (may pass)``: a new run needing only that second resource, which may go ahead of
  the waiting runs (backfilling on arrival) if it cannot delay any: it checks each run ahead
  when there are at most 100 of them, and queues at once behind more.
Admission must grow no worse than log-linear in N. Writes bench/results/scale.txt.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import write_results
from orchestrator.constants import Priority
from orchestrator.core.resources import parse_resources
from orchestrator.engine.admission import Admission, RunNeeds

URL = "redis://127.0.0.1:6379/8"
POOL = "resources: {seat: {daily_limit: 1, unit_price_usd: 0}}"
#: The same with a resource nobody lacks: a blocked head no longer ends the pass early.
WIDE_POOL = "resources: {seat: {daily_limit: 1}, spare: {daily_limit: 1000000}}"
SIZES = (10, 100, 1_000, 10_000)
REPEATS = 200
ROUNDS = 3
NEEDS = RunNeeds({"seat": 1})


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def queued(client: redis.Redis, pool: str, waiting: int, spare: bool = False) -> Admission:
    """An empty Redis DB where a holder has the seat and ``waiting`` runs wait for it (and
    for a spare unit each, with ``spare``)."""
    client.flushdb()
    admission = Admission(client, parse_resources(pool), lease_ttl_s=3600)
    assert admission.reserve("holder", NEEDS, Priority.NORMAL).status == "admitted"
    pipe = client.pipeline(transaction=False)
    for i in range(waiting):  # fill the queue quickly, then check it through the real script
        args = [admission.prefix, f"w{i}", 1, "1", "seat", 1, *(["spare", 1] if spare else [])]
        admission._reserve(args=args, client=pipe)
    pipe.execute()
    assert client.zcard(admission.prefix + "pending") == waiting
    return admission


def measure(client: redis.Redis, waiting: int) -> dict[str, float]:
    reserve, admit, scan, full, passing = [], [], [], [], []
    wide = queued(client, WIDE_POOL, waiting, spare=True)
    for _ in range(REPEATS):
        t = time.perf_counter()
        nothing = wide.admit_pending()
        full.append(time.perf_counter() - t)
        assert nothing == []
    for n in range(REPEATS):
        t = time.perf_counter()
        decision = wide.reserve(f"spare{n}", RunNeeds({"spare": 1}), Priority.LOW)
        passing.append(time.perf_counter() - t)
        assert (decision.status == "admitted") == (waiting <= 100), decision
    admission = queued(client, POOL, waiting)
    for n in range(REPEATS):
        t = time.perf_counter()
        decision = admission.reserve(f"new{n}", NEEDS, Priority.LOW)
        reserve.append(time.perf_counter() - t)
        assert decision.status != "admitted"
        t = time.perf_counter()
        nothing = admission.admit_pending()
        scan.append(time.perf_counter() - t)
        assert nothing == []
    holder = "holder"
    for _ in range(REPEATS):  # each release admits exactly the head, which then holds
        t = time.perf_counter()
        admitted = admission.release(holder)
        admit.append(time.perf_counter() - t)
        assert len(admitted) == 1
        holder = admitted[0]
        admission.launched(holder)
    return {
        "reserve (queued)": _median_us(reserve),
        "release -> admit head": _median_us(admit),
        "admit_pending (none fits)": _median_us(scan),
        "admit_pending (full scan)": _median_us(full),
        "reserve (may pass)": _median_us(passing),
    }


def main() -> None:
    client = redis.Redis.from_url(URL)
    before = os.getloadavg()
    rounds = [{size: measure(client, size) for size in SIZES} for _ in range(ROUNDS)]
    rows = {size: {k: min(r[size][k] for r in rounds) for k in rounds[0][size]} for size in SIZES}
    client.flushdb()
    kinds = list(rows[SIZES[0]])
    # The machine's load is written beside the figures: other work on it moves them.
    loads = [" ".join(f"{v:.2f}" for v in load) for load in (before, os.getloadavg())]
    lines = [
        f"Admission decision time (median µs of {REPEATS} calls, best of {ROUNDS} rounds) "
        "by runs waiting in the queue",
        f"load average (1, 5, 15 min) before: {loads[0]}, after: {loads[1]}",
        "waiting".rjust(8) + "".join(k.rjust(28) for k in kinds),
    ]
    for size, figures in rows.items():
        lines.append(str(size).rjust(8) + "".join(f"{figures[k]:28.1f}" for k in kinds))
    first, last = rows[SIZES[0]], rows[SIZES[-1]]
    growth = SIZES[-1] / SIZES[0]
    lines.append(
        f"from {SIZES[0]} to {SIZES[-1]} waiting ({growth:.0f}x): "
        + ", ".join(f"{k} x{last[k] / first[k]:.2f}" for k in kinds)
    )
    lines.append(
        "(a full scan looks at min(waiting - 1, 100) runs past the head, and a new run that may"
        " pass checks the runs ahead only when there are at most 100: both are flat from 100 on)"
    )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    write_results("scale.txt", text)


if __name__ == "__main__":
    main()
