"""Live progress (SSE) on ONE API process: event latency at 1 and at 1,000 subscribers, and
the Redis connections that process uses while 1,000 streams are open.

The real server (``orchestrator api``: gunicorn, one gevent worker) serves the streams;
subscribers are greenlets in a few client processes (bench/sse_clients.py). Events go in
through the product's own ``events.publish`` with their send time; latency is receive time
minus send time (same host clock). Redis connections are counted from the API worker's own
sockets (/proc) and from CLIENT LIST. Writes bench/results/sse.txt.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import bench_settings, write_results
from orchestrator.api.stream_hub import CLIENT_NAME
from orchestrator.auth import Scope, create_key
from orchestrator.db import PipelineExecution
from orchestrator.engine import events
from orchestrator.ops import migrations, supervisor
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings

REDIS_DB = 9
EVENTS = 40
#: 20 events a second is a stress (a stage reports a few a second at most); 4 a second is busy.
INTERVALS_S = (0.05, 0.25)
CLIENT_PROCESSES = 4  # subscribers are spread over these (one is enough for 1)
REPEATS = 3


def raise_file_limit() -> int:
    """Each stream is a socket on both ends: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def redis_sockets(pid: int, redis_port: int = 6379) -> int:
    """TCP connections of process ``pid`` to the Redis port, read from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == redis_port and fields[9] in inodes and fields[3] == "01":
                count += 1
    return count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_api(settings: Settings) -> tuple[subprocess.Popen, int]:
    port = free_port()
    return supervisor.start_api(settings, port), port


def new_execution(runtime: Runtime) -> str:
    execution_id = f"bench-sse-{uuid.uuid4().hex[:12]}"
    with runtime.db.session() as session:
        session.add(
            PipelineExecution(
                execution_id=execution_id, template_name="bench_sse", status="running"
            )
        )
    return execution_id


def measure(runtime: Runtime, port: int, key: str, api_pid: int, n: int, interval_s: float) -> dict:
    """Open ``n`` streams, publish EVENTS events and a final one, collect the latencies."""
    execution_id = new_execution(runtime)
    procs = min(n, CLIENT_PROCESSES)
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    script = str(ROOT / "bench" / "sse_clients.py")
    clients = [
        subprocess.Popen(
            [sys.executable, script, "127.0.0.1", str(port), key, execution_id, str(share)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    for client in clients:
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # every stream is registered with the hub
    connections = redis_sockets(api_pid)
    listed = [
        c
        for c in runtime.redis.client_list()
        if c.get("name") == CLIENT_NAME and c.get("db") == str(REDIS_DB)
    ]
    cpu_before = cpu_seconds(api_pid)
    for i in range(EVENTS):
        events.publish(
            runtime.redis,
            execution_id,
            {"type": "progress", "stage": "s", "progress": i, "sent_at": time.time()},
        )
        time.sleep(interval_s)
    events.publish(
        runtime.redis,
        execution_id,
        {"type": "final", "status": "completed", "sent_at": time.time()},
    )
    latencies: list[float] = []
    complete: list[int] = []
    for client in clients:
        out, _ = client.communicate(timeout=300)
        result = json.loads(out.strip().splitlines()[-1])
        latencies += result["latencies_ms"]
        complete += result["complete"]
    cpu = cpu_seconds(api_pid) - cpu_before
    connections = max(connections, redis_sockets(api_pid))
    latencies.sort()
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "delivered": len(latencies),
        "expected": n * (EVENTS + 1),
        "complete": sum(1 for c in complete if c == EVENTS + 1),
        "connections": connections,
        "hub_clients": len(listed),
        "cpu_us_per_delivery": cpu * 1e6 / max(1, len(latencies)),
    }


def main() -> None:
    limit = raise_file_limit()
    settings = bench_settings(REDIS_DB, "orch-bench-sse-")
    migrations.upgrade(settings)
    runtime = Runtime(settings)
    runtime.redis.flushdb()
    key = create_key(runtime.db, Scope.MONITOR)
    api, port = start_api(settings)
    try:
        workers = children(api.pid)
        assert len(workers) == 1, workers  # one gunicorn worker: ONE API process
        results: dict[tuple[float, int], list[dict]] = {
            (interval, n): [] for interval in INTERVALS_S for n in (1, 1000)
        }
        for _ in range(REPEATS):
            for interval, n in results:
                results[interval, n].append(measure(runtime, port, key, workers[0], n, interval))
    finally:
        api.terminate()
        api.wait(15)

    def med(rows: list[dict], field: str) -> float:
        return statistics.median(r[field] for r in rows)

    lines = [
        f"SSE on one API process (gunicorn, 1 gevent worker), {EVENTS} events + final per run, "
        f"median of {REPEATS} runs, subscribers in {CLIENT_PROCESSES} gevent client processes "
        f"on the same host, open-files limit {limit}, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores:",
    ]
    for interval in INTERVALS_S:
        one, many = results[interval, 1], results[interval, 1000]
        lines += [
            f"  one event every {interval * 1000:.0f} ms:",
            f"    1 subscriber        p50 {med(one, 'p50'):7.1f} ms   "
            f"p99 {med(one, 'p99'):7.1f} ms",
            f"    1,000 subscribers   p50 {med(many, 'p50'):7.1f} ms   "
            f"p99 {med(many, 'p99'):7.1f} ms   "
            f"(API CPU {med(many, 'cpu_us_per_delivery'):.0f} us per event delivered)",
            f"    p99 at 1,000 / p99 at 1   {med(many, 'p99') / med(one, 'p99'):.1f}x",
            f"    streams that got every event at 1,000: "
            f"{', '.join(str(r['complete']) for r in many)} (of 1000 per run); events delivered "
            f"{sum(r['delivered'] for r in many)} of {sum(r['expected'] for r in many)}",
        ]
    every = [r for rows in results.values() for r in rows]
    lines.append(
        f"  Redis connections of the API process with 1,000 streams open: "
        f"{max(r['connections'] for r in every if r['expected'] > EVENTS + 1)} "
        f"(with 1: {max(r['connections'] for r in every if r['expected'] == EVENTS + 1)}); "
        f"SSE hub connections on the bench's Redis DB in CLIENT LIST: "
        f"{max(r['hub_clients'] for r in every)}"
    )
    text = "\n".join(lines) + "\n"
    write_results("sse.txt", text)
    print(text)


if __name__ == "__main__":
    main()
