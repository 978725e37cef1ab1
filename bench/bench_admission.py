"""Reservations per second with 50 concurrent clients, against EVAL "return 1" and SET.

The same harness (5 processes x 10 threads, one connection each, the same redis-py client
and ``register_script``/EVALSHA path) drives all three, so the ratios show what the admission
script and its client call cost. The processes and their connections live for the whole
bench; the three kinds run in many short rounds, in rotating order, all clients starting
together. Each ratio is taken within a round (neighbouring seconds see the same machine
load) and the median over the rounds is reported. Writes bench/results/admission.txt.
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
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import write_results
from orchestrator.constants import Priority
from orchestrator.core.resources import parse_resources
from orchestrator.engine.admission import Admission, RunNeeds

URL = "redis://127.0.0.1:6379/10"
PROCESSES, THREADS, SECONDS, ROUNDS = 5, 10, 1.0, 12
POOL = "resources: {tokens: {daily_limit: 1.0e12, monthly_limit: 1.0e13, unit_price_usd: 0}}"
KINDS = ("set", "eval", "reserve")


def drive(client: Any, kind: str, start_at: float, label: str, counts: list, i: int) -> None:
    """One client thread of one round: ``kind`` calls, back to back, for SECONDS."""
    connection, admission, noop = client
    needs = RunNeeds({"tokens": 1})
    n = 0
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + SECONDS
    while time.perf_counter() < deadline:
        if kind == "reserve":
            admission.reserve(f"{label}-{n}", needs, Priority.NORMAL)
        elif kind == "eval":
            noop()
        else:
            connection.set(f"bench:{label}", n)
        n += 1
    counts[i] = n


def client_process(commands: multiprocessing.Queue, results: multiprocessing.Queue) -> None:
    """One process of 10 client threads, each with its own connection, kept across rounds."""
    clients = []
    for _ in range(THREADS):
        connection = redis.Redis.from_url(URL)
        admission = Admission(connection, parse_resources(POOL), lease_ttl_s=600)
        noop = connection.register_script("return 1")
        noop()  # loaded, and the connection open, before any timing
        clients.append((connection, admission, noop))
    prefix = uuid.uuid4().hex[:8]
    while (command := commands.get()) is not None:
        kind, start_at, round_ = command
        counts = [0] * THREADS
        threads = [
            threading.Thread(
                target=drive,
                args=(clients[i], kind, start_at, f"{prefix}-{i}-{round_}", counts, i),
            )
            for i in range(THREADS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        results.put(sum(counts))


def main() -> None:
    redis.Redis.from_url(URL).flushdb()
    commands = [multiprocessing.Queue() for _ in range(PROCESSES)]
    results: multiprocessing.Queue = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=client_process, args=(q, results)) for q in commands
    ]
    for p in processes:
        p.start()
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    try:
        for round_ in range(ROUNDS):
            for kind in KINDS[round_ % 3 :] + KINDS[: round_ % 3]:  # rotate who goes first
                start_at = time.time() + 0.2
                for q in commands:
                    q.put((kind, start_at, round_))
                rates[kind].append(sum(results.get(timeout=60) for _ in processes) / SECONDS)
    finally:
        for q in commands:
            q.put(None)
        for p in processes:
            p.join(30)
        redis.Redis.from_url(URL).flushdb()
    rate = {kind: statistics.median(values) for kind, values in rates.items()}
    to_eval = [r / e for r, e in zip(rates["reserve"], rates["eval"], strict=True)]
    to_set = [r / s for r, s in zip(rates["reserve"], rates["set"], strict=True)]
    q1, _, q3 = statistics.quantiles(to_eval, n=4)
    lines = [
        f"{PROCESSES * THREADS} concurrent clients ({PROCESSES} processes x {THREADS} threads), "
        f"{ROUNDS} rounds of {SECONDS:.0f} s per kind, Redis 127.0.0.1 (load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end):",
        f"  SET              {rate['set']:9.0f} ops/s   (median of rounds)",
        f"  EVAL 'return 1'  {rate['eval']:9.0f} ops/s",
        f"  reserve (Lua)    {rate['reserve']:9.0f} ops/s",
        f"  reserve / EVAL   {statistics.median(to_eval):9.2f}   (goal >= 0.80; median of "
        f"per-round ratios, quartiles {q1:.2f}-{q3:.2f})",
        f"  reserve / SET    {statistics.median(to_set):9.2f}",
    ]
    text = "\n".join(lines) + "\n"
    write_results("admission.txt", text)
    print(text)


if __name__ == "__main__":
    main()
