"""Reservations per second with 50 concurrent clients, against EVAL "return 1" and SET.

The same harness (5 processes x 10 threads, one connection each, the same redis-py client
and ``register_script``/EVALSHA path) drives all three, so the ratios show what the admission
script and its client call cost. The three run in alternating rounds and each figure is the
median of its rounds, so a neighbour's load burst does not land on one measurement only.
Writes bench/results/admission.txt.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.admission import Admission, RunNeeds  # noqa: E402
from orchestrator.constants import Priority  # noqa: E402
from orchestrator.core.resources import parse_resources  # noqa: E402

URL = "redis://127.0.0.1:6379/10"
PROCESSES, THREADS, SECONDS, ROUNDS = 5, 10, 2.0, 5
POOL = "resources: {tokens: {daily_limit: 1.0e12, monthly_limit: 1.0e13, unit_price_usd: 0}}"


def client_loop(kind: str, results: multiprocessing.Queue) -> None:
    counts = []

    def run() -> None:
        client = redis.Redis.from_url(URL)
        admission = Admission(client, parse_resources(POOL), lease_ttl_s=600)
        noop = client.register_script("return 1")
        prefix = uuid.uuid4().hex[:8]
        n = 0
        deadline = time.perf_counter() + SECONDS
        while time.perf_counter() < deadline:
            if kind == "reserve":
                admission.reserve(f"{prefix}-{n}", RunNeeds({"tokens": 1}), Priority.NORMAL)
            elif kind == "eval":
                noop()
            else:
                client.set(f"bench:{prefix}", n)
            n += 1
        counts.append(n)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(sum(counts))


def measure(kind: str) -> float:
    results: multiprocessing.Queue = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=client_loop, args=(kind, results)) for _ in range(PROCESSES)
    ]
    for p in processes:
        p.start()
    total = sum(results.get(timeout=60) for _ in processes)
    for p in processes:
        p.join()
    return total / SECONDS


def main() -> None:
    redis.Redis.from_url(URL).flushdb()
    kinds = ["set", "eval", "reserve"]
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_ in range(ROUNDS):
        for kind in kinds[round_ % 3 :] + kinds[: round_ % 3]:  # rotate who goes first
            rates[kind].append(measure(kind))
    redis.Redis.from_url(URL).flushdb()
    rate = {kind: statistics.median(values) for kind, values in rates.items()}
    per_round = [r / e for r, e in zip(rates["reserve"], rates["eval"], strict=True)]
    load = os.getloadavg()[0]
    lines = [
        f"{PROCESSES * THREADS} concurrent clients ({PROCESSES} processes x {THREADS} threads), "
        f"median of {ROUNDS} alternating rounds of {SECONDS:.0f} s, Redis 127.0.0.1 "
        f"(load average {load:.1f} on {os.cpu_count()} cores):",
        f"  SET              {rate['set']:9.0f} ops/s",
        f"  EVAL 'return 1'  {rate['eval']:9.0f} ops/s",
        f"  reserve (Lua)    {rate['reserve']:9.0f} ops/s",
        f"  reserve / EVAL   {rate['reserve'] / rate['eval']:9.2f}   (goal >= 0.80; per round "
        f"{', '.join(f'{x:.2f}' for x in per_round)})",
        f"  reserve / SET    {rate['reserve'] / rate['set']:9.2f}",
    ]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "admission.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
