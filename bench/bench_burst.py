"""A burst of runs through the API, against bare Celery; a load ramp with and without
``--autoscale`` (issue 12, the measurement).

Everything runs as a user runs it, on private services: ``orchestrator api`` (gunicorn),
``orchestrator beat``, real ``celery -A orchestrator.celery_app worker`` processes, Redis DB 7,
the PostgreSQL database ``orchestrator_burst`` (dropped and created afresh), a ``weed mini``
of the bench's own on free ports and the shipped corpus on a free loopback port.

1. Burst: ``BENCH_BURST_RUNS`` runs (default 1,000) posted at once from 16 threads and 4
   client keys, a mix of ``market_research_pipeline`` on the shipped corpus (offline, no LLM)
   and ``bench_burst`` (bench/templates: a short nap, a fan-out of 4 naps, a join; worker
   type ``bench_nap``, bench/burst_workers.py). Counted: 202s, completed / failed / cancelled
   (GET /executions), lost = accepted - ended, what is still leased, reserved or queued after
   (GET /resources); runs/s from the first POST to the last completion; submit-to-first-stage
   (the run's ``created_at`` to its first stage's ``started_at``); each worker type's busy
   share while runs were still waiting to start (from the stage rows, and sampled from GET
   /resources each second).
2. The same mix as bare Celery (bench/bare_app.py): the same stage functions in chains and
   groups of the same shape, one queue per worker type at the same concurrency.
3. Ramp: ``bench_burst`` arrivals rising linearly to ``BENCH_BURST_RAMP_PEAK`` runs/s and
   back to 0 over ``BENCH_BURST_RAMP_S`` seconds, served by ``orchestrator workers`` with a
   fixed pool of ``bench_nap``'s capacity, then by ``orchestrator workers --autoscale``
   starting from one process. Each mode starts with no run history (the forecast the
   autoscaler reads starts from nothing in both). Reported: p50 / p95 queue wait (a stage's
   start minus the moment it became ready: the run's creation or its last upstream's end),
   p95 submit-to-first-stage, and worker-seconds (pool processes x time, from the first
   arrival to the last completion; the autoscaler's resize lines give the sizes).

Writes bench/results/burst.txt. ``BENCH_BURST_RUNS=50 BENCH_BURST_RAMP_S=30`` is a smoke run.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import yaml
from sqlalchemy import delete, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import bench_settings, write_results
from orchestrator import template_registry
from orchestrator.auth import Scope, create_key
from orchestrator.constants import COORDINATOR_QUEUE, ExecutionStatus
from orchestrator.db import PipelineExecution, ResourceUsage, StageExecution
from orchestrator.engine.recovery import QueueDepths
from orchestrator.ops import migrations
from orchestrator.ops.supervisor import WorkerFleet, start_api, start_worker, wait_ready
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from orchestrator.storage.objects import ObjectStore
from tests.services import WeedServer, end, free_ports
from workers.lib.corpus import answers_as_corpus

REDIS_DB = 7
PG_DATABASE = "orchestrator_burst"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
RUNS = int(os.environ.get("BENCH_BURST_RUNS", "1000"))
#: Share of the burst that is market_research_pipeline (the rest is bench_burst).
MARKET_SHARE = float(os.environ.get("BENCH_BURST_MARKET_SHARE", "0.2"))
MARKET_DEPTH = os.environ.get("BENCH_BURST_MARKET_DEPTH", "quick")
RAMP_S = float(os.environ.get("BENCH_BURST_RAMP_S", "120"))
RAMP_PEAK = float(os.environ.get("BENCH_BURST_RAMP_PEAK", "3"))
MARKET, SYNTHETIC = "market_research_pipeline", "bench_burst"
TOPICS = ("electric vehicles", "specialty coffee", "quantum computing")  # the shipped corpus
MARKET_TYPES = (
    "topic_researcher",
    "rss_source_finder",
    "feed_fetcher",
    "content_classifier",
    "universal_researcher",
    "report_builder",
)
NAP = "bench_nap"
#: Worker processes per queue in the burst; each type's capacity (max_concurrent) is the same.
CONCURRENCY = {COORDINATOR_QUEUE: 2, **dict.fromkeys(MARKET_TYPES, 2), NAP: 8}
CLIENTS = 4
POSTERS = 16
TERMINAL = {s.value for s in ExecutionStatus if s.terminal}


# -- the stack ---------------------------------------------------------------------------------


def fresh_database() -> str:
    """Drop and create the bench's PostgreSQL database; its SQLAlchemy URL."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{PG_DATABASE}"


def bench_resources(directory: Path) -> Path:
    """resources.yaml with feed_requests' rate and daily quota out of the way (a burst of
    market research would otherwise be paced at 600 requests a minute: the quota's throughput,
    not the engine's) and each worker type's capacity equal to the processes that serve it."""
    pool = yaml.safe_load((ROOT / "resources.yaml").read_text())
    pool["resources"]["feed_requests"].update(rate_limit_per_minute=10**7, daily_limit=10**9)
    pool["workers"]["max_concurrent"] = {
        k: v for k, v in CONCURRENCY.items() if k != COORDINATOR_QUEUE
    }
    path = directory / "resources.yaml"
    path.write_text(yaml.safe_dump(pool, sort_keys=False))
    return path


def child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(settings.to_env())
    return env


@dataclass
class Stack:
    settings: Settings
    runtime: Runtime
    url: str
    keys: list[str]
    monitor_key: str
    api: subprocess.Popen[bytes]
    beat: subprocess.Popen[bytes]
    http: list[httpx.Client] = field(default_factory=list)
    #: Transport errors met by POST /execute (each was posted again).
    transport_errors: list[str] = field(default_factory=list)
    monitor: httpx.Client | None = None

    def __post_init__(self) -> None:
        limits = httpx.Limits(max_connections=POSTERS, max_keepalive_connections=POSTERS)
        self.http = [
            httpx.Client(
                base_url=self.url,
                timeout=120,
                limits=limits,
                headers={"Authorization": f"Bearer {key}"},
            )
            for key in self.keys
        ]
        self.monitor = httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {self.monitor_key}"}
        )

    def post(
        self, n: int, template: str, parameters: dict[str, Any]
    ) -> tuple[int, str | None, float]:
        """POST /execute; (status, execution id or None, seconds the answer took)."""
        body = {
            "request_id": f"{template}-{n}-{uuid.uuid4().hex[:8]}",
            "template_name": template,
            "parameters": parameters,
        }
        started = time.perf_counter()
        for attempt in range(3):
            try:
                response = self.http[n % len(self.http)].post("/execute", json=body)
                break
            except httpx.TransportError as error:
                # A keep-alive connection the server closed as it was reused (gunicorn's
                # keepalive is 2 s): posted again, safely, with the same request_id.
                self.transport_errors.append(repr(error))
                if attempt == 2:
                    return 0, None, time.perf_counter() - started
        took = time.perf_counter() - started
        if response.status_code != 202:
            print(f"POST /execute {response.status_code}: {response.text[:300]}", flush=True)
            return response.status_code, None, took
        return 202, response.json()["execution_id"], took

    def pool(self) -> dict[str, Any]:
        assert self.monitor is not None
        response = self.monitor.get("/resources")
        response.raise_for_status()
        return response.json()

    def statuses(self) -> dict[str, str]:
        """Every run's status as GET /executions lists it (all client keys, every page)."""
        found: dict[str, str] = {}
        for client in self.http:
            offset = 0
            while True:
                page = client.get("/executions", params={"limit": 500, "offset": offset}).json()
                found.update({item["execution_id"]: item["status"] for item in page["items"]})
                offset += len(page["items"])
                if not page["items"] or offset >= page["total"]:
                    break
        return found

    def ended(self, ids: list[str]) -> Counter[str]:
        """Statuses of ``ids`` in the database (cheap enough to poll every second)."""
        with self.runtime.db.session() as session:
            rows = session.execute(
                select(PipelineExecution.status).where(PipelineExecution.execution_id.in_(ids))
            ).all()
        return Counter(status for (status,) in rows)

    def wait_ended(self, ids: list[str], timeout_s: float, on_tick: Any = None) -> float:
        """Block until every run of ``ids`` is terminal; the monotonic time it happened."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = self.ended(ids)
            if on_tick is not None:
                on_tick(counts)
            if sum(counts[s] for s in TERMINAL) >= len(ids):
                return time.monotonic()
            time.sleep(1.0)
        raise TimeoutError(f"runs not ended in {timeout_s:.0f} s: {dict(self.ended(ids))}")

    def forget_history(self) -> None:
        """No run, stage or usage rows: the next phase's forecast starts from nothing."""
        with self.runtime.db.session() as session:
            session.execute(delete(ResourceUsage))
            session.execute(delete(StageExecution))
            session.execute(delete(PipelineExecution))


def start_stack(settings: Settings) -> Stack:
    migrations.upgrade(settings)
    runtime = Runtime(settings)
    runtime.redis.flushdb()
    known = template_registry.known_workers(runtime)
    synthetic = template_registry.parse_yaml((ROOT / "bench" / "templates" / "bench_burst.yaml")
                                             .read_text())  # fmt: skip
    template_registry.put(runtime.db, synthetic, known)
    keys = [
        create_key(runtime.db, Scope.CLIENT, client_id=f"burst-{i}", label="bench burst")
        for i in range(CLIENTS)
    ]
    monitor_key = create_key(runtime.db, Scope.MONITOR, label="bench burst")
    port = free_ports(1)[0]
    api = start_api(settings, port)
    beat = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "beat", "-l", "WARNING"],
        env=child_env(settings),
        stdout=(settings.data_dir / "beat.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Stack(settings, runtime, f"http://127.0.0.1:{port}", keys, monitor_key, api, beat)


# -- CPU -------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process tree: the root's own and its reaped children's, plus those of
    its live descendants (prefork pool processes, gunicorn's worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0.0
    for member in tree:
        try:
            fields = _stat(member)
        except OSError:
            continue
        own = int(fields[11]) + int(fields[12])
        reaped = int(fields[13]) + int(fields[14]) if member == pid else 0
        total += (own + reaped) / tick
    return total


def cpu_by_role(roles: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(process_cpu_s(pid) for pid in pids) for role, pids in roles.items()}


# -- figures -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


@dataclass
class RunRows:
    """What the database holds of some runs: (created, completed, status), their stages."""

    runs: dict[str, tuple[float, float | None, str, str]]
    #: execution -> stage name -> (worker, started, completed)
    stages: dict[str, dict[str, tuple[str, float | None, float | None]]]

    @classmethod
    def read(cls, runtime: Runtime, ids: list[str]) -> RunRows:
        runs: dict[str, tuple[float, float | None, str, str]] = {}
        stages: dict[str, dict[str, tuple[str, float | None, float | None]]] = {}
        with runtime.db.session() as session:
            for row in session.scalars(
                select(PipelineExecution).where(PipelineExecution.execution_id.in_(ids))
            ):
                created = epoch(row.created_at)
                assert created is not None
                runs[row.execution_id] = (
                    created,
                    epoch(row.completed_at),
                    row.status,
                    row.template_name,
                )
            for stage in session.scalars(
                select(StageExecution).where(StageExecution.execution_id.in_(ids))
            ):
                stages.setdefault(stage.execution_id, {})[stage.stage_name] = (
                    stage.worker_name,
                    epoch(stage.started_at),
                    epoch(stage.completed_at),
                )
        return cls(runs, stages)

    def first_stage_waits(self) -> list[float]:
        """Per run: its creation to its first stage's start, seconds."""
        waits = []
        for run, (created, *_) in self.runs.items():
            starts = [s for _, s, _ in self.stages.get(run, {}).values() if s is not None]
            if starts:
                waits.append(min(starts) - created)
        return waits

    def last_first_start(self) -> float:
        """The moment the last run still waiting to start got its first stage going."""
        latest = 0.0
        for run in self.runs:
            starts = [s for _, s, _ in self.stages.get(run, {}).values() if s is not None]
            if starts:
                latest = max(latest, min(starts))
        return latest

    def queue_waits(self, deps: dict[str, dict[str, tuple[str, ...]]]) -> list[float]:
        """Per stage: its start minus when it became ready (its run's creation for a root,
        else its last upstream stage's end). ``deps``: template -> stage -> upstream stages."""
        waits = []
        for run, (created, _, _, template) in self.runs.items():
            rows = self.stages.get(run, {})
            for name, (_, started, _) in rows.items():
                upstream = deps[template].get(name, ())
                ends = [rows[d][2] for d in upstream if d in rows]
                if started is None or any(e is None for e in ends):
                    continue
                ready = max([e for e in ends if e is not None], default=created)
                waits.append(started - ready)
        return waits

    def stage_times(self) -> dict[str, list[float]]:
        """Per worker type: each stage's start to end, seconds."""
        out: dict[str, list[float]] = {}
        for rows in self.stages.values():
            for kind, began, ended in rows.values():
                if began is not None and ended is not None:
                    out.setdefault(kind, []).append(ended - began)
        return out

    def busy_share(self, worker: str, slots: int, start: float, stop: float) -> float:
        """Slot-seconds the type's stages held in [start, stop] over slots x the window."""
        busy = 0.0
        for rows in self.stages.values():
            for kind, began, ended in rows.values():
                if kind == worker and began is not None and ended is not None:
                    busy += max(0.0, min(ended, stop) - max(began, start))
        return busy / (slots * max(1e-9, stop - start))


def steady_rate(completions: list[float]) -> float:
    """Runs/s between the 10th and the 90th percentile completion: the pace once the burst
    is under way, without the posting at the start and the last stragglers."""
    ordered = sorted(completions)
    lo, hi = int(len(ordered) * 0.1), int(len(ordered) * 0.9) - 1
    if hi <= lo or ordered[hi] <= ordered[lo]:
        return float("nan")
    return (hi - lo) / (ordered[hi] - ordered[lo])


def depends_map(runtime: Runtime, requests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Template -> stage -> upstream stages, for the parameters the bench uses."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for template, parameters in requests:
        if template not in out:
            _, bound = template_registry.prepare(runtime, template, parameters)
            out[template] = {s.id: s.depends_on for s in bound}
    return out


def leftovers(stack: Stack) -> dict[str, Any]:
    """What is still held once every run ended: leases, waiting runs, slots, reservations,
    messages in the engine's queues (retried for a few seconds: the finish releases last)."""
    deadline = time.monotonic() + 15
    while True:
        pool = stack.pool()
        depths = QueueDepths(stack.runtime)
        queued = sum(depths.depth(queue) for queue in CONCURRENCY)
        held = {
            "leases": pool["leases"],
            "pending_runs": pool["pending_runs"],
            "admitted_runs": pool["admitted_runs"],
            "slots_active": sum(w["active"] for w in pool["worker_capacity"].values()),
            "reserved_units": round(sum(r["reserved"] for r in pool["resources"].values()), 6),
            "queued_messages": queued,
        }
        if not any(held.values()) or time.monotonic() > deadline:
            return held
        time.sleep(1)


# -- 1. the burst through the engine -----------------------------------------------------------


def burst_requests(n: int) -> list[tuple[str, dict[str, Any]]]:
    """The mix, in posting order: every k-th run market research (topics in turn)."""
    every = max(1, round(1 / MARKET_SHARE)) if MARKET_SHARE > 0 else 0
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(n):
        if every and i % every == 0:
            topic = TOPICS[(i // every) % len(TOPICS)]
            out.append((MARKET, {"topic": topic, "depth": MARKET_DEPTH}))
        else:
            out.append((SYNTHETIC, {"width": 4, "seconds": 0.2}))
    return out


@dataclass
class Sampler:
    """GET /resources once a second while the burst runs: slots held per type, 1m
    utilization per type, runs waiting for admission."""

    stack: Stack
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                pool = self.stack.pool()
            except httpx.HTTPError:
                continue
            self.samples.append(
                {
                    "t": time.time(),
                    "active": {w: v["active"] for w, v in pool["worker_capacity"].items()},
                    "util_1m": {w: v.get("1m") for w, v in pool["utilization"].items()},
                    "pending": pool["pending_runs"],
                }
            )


def warm_up(stack: Stack) -> None:
    """One run of each template (imports, the corpus, connections), then forgotten."""
    ids = []
    for template, parameters in (
        (MARKET, {"topic": "warm-up", "depth": MARKET_DEPTH}),
        (SYNTHETIC, {}),
    ):
        status, execution_id, _ = stack.post(0, template, parameters)
        assert execution_id is not None, status
        ids.append(execution_id)
    stack.wait_ended(ids, 180)
    stack.forget_history()


def engine_burst(stack: Stack, requests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    fleet = WorkerFleet(log_dir=stack.settings.data_dir / "logs")
    for queue, concurrency in CONCURRENCY.items():
        start_worker(fleet, stack.settings, queue, concurrency=concurrency)
    try:
        wait_ready(stack.runtime.celery, fleet, timeout_s=120)
        warm_up(stack)
        load_before = os.getloadavg()
        roles = {
            "API": [stack.api.pid],
            "beat": [stack.beat.pid],
            "coordinator": [fleet.processes[COORDINATOR_QUEUE].pid],
            **{q: [p.pid] for q, p in fleet.processes.items() if q != COORDINATOR_QUEUE},
        }
        cpu_before = cpu_by_role(roles)
        sampler = Sampler(stack)
        sampler.start()
        began = time.time()
        with ThreadPoolExecutor(POSTERS) as pool:
            answers = list(pool.map(lambda a: stack.post(a[0], *a[1]), enumerate(requests)))
        posted = time.time()
        accepted = [execution_id for _, execution_id, _ in answers if execution_id]
        print(f"burst: {len(accepted)} accepted in {posted - began:.1f} s", flush=True)
        progress = {"last": 0.0}

        def tick(counts: Counter[str]) -> None:
            if time.monotonic() - progress["last"] > 10:
                progress["last"] = time.monotonic()
                print(f"  {dict(counts)}", flush=True)

        stack.wait_ended(accepted, 1800, tick)
        cpu_after = cpu_by_role(roles)
        sampler.stop()
        statuses = stack.statuses()
        held = leftovers(stack)
        rows = RunRows.read(stack.runtime, accepted)
    finally:
        fleet.stop()
    ended = {r: statuses.get(r) for r in accepted}
    last_end = max(c for _, c, _, _ in rows.runs.values() if c is not None)
    backlog_end = rows.last_first_start()
    share = {
        worker: rows.busy_share(worker, slots, began, backlog_end)
        for worker, slots in CONCURRENCY.items()
        if worker != COORDINATOR_QUEUE
    }
    during = [s for s in sampler.samples if began <= s["t"] <= backlog_end]
    sampled = {
        worker: statistics.mean(s["active"].get(worker, 0) for s in during) / slots
        for worker, slots in CONCURRENCY.items()
        if worker != COORDINATOR_QUEUE and during
    }
    util_1m = {}
    if during:
        util_1m = {w: v for w, v in during[-1]["util_1m"].items() if v is not None}
    return {
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "posted": len(requests),
        "answers": Counter(status for status, _, _ in answers),
        "post_latency": [took for _, _, took in answers],
        "transport_errors": Counter(stack.transport_errors),
        "cpu": {role: cpu_after[role] - cpu_before[role] for role in roles},
        "accepted": len(accepted),
        "post_s": posted - began,
        "counts": Counter(s for s in ended.values() if s is not None),
        "lost": sum(1 for s in ended.values() if s not in TERMINAL),
        "held": held,
        "runs_per_s": len(accepted) / (last_end - began),
        "elapsed_s": last_end - began,
        "steady_per_s": steady_rate([c for _, c, _, _ in rows.runs.values() if c is not None]),
        "stage_times": rows.stage_times(),
        "first_stage": rows.first_stage_waits(),
        "first_stage_by_template": {
            t: RunRows(
                {r: v for r, v in rows.runs.items() if v[3] == t}, rows.stages
            ).first_stage_waits()
            for t in (MARKET, SYNTHETIC)
        },
        "backlog_s": backlog_end - began,
        "share": share,
        "sampled": sampled,
        "util_1m": util_1m,
        "util_1m_at": (during[-1]["t"] - began) if during else 0.0,
    }


# -- 2. the same burst on bare Celery ----------------------------------------------------------


def bare_burst(stack: Stack, requests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    os.environ.update(stack.settings.to_env())
    from bench.bare_app import DONE_KEY, STARTED_KEY, TIMES_KEY, canvas
    from bench.bare_app import app as bare

    client = redis.Redis.from_url(stack.settings.redis_url)
    fleet = WorkerFleet(log_dir=stack.settings.data_dir / "logs")
    for worker, concurrency in CONCURRENCY.items():
        if worker != COORDINATOR_QUEUE:
            start_worker(
                fleet,
                stack.settings,
                f"bare.{worker}",
                concurrency=concurrency,
                app_module="bench.bare_app",
            )
    bound: dict[str, Any] = {}

    def shape(template: str, parameters: dict[str, Any]) -> Any:
        key = f"{template}{sorted(parameters.items())}"
        if key not in bound:
            bound[key] = template_registry.prepare(stack.runtime, template, parameters)[1]
        return bound[key]

    def wait_done(count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while client.zcard(DONE_KEY) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bare: {client.zcard(DONE_KEY)} of {count} done")
            time.sleep(0.2)

    try:
        wait_ready(bare, fleet, timeout_s=120)
        client.delete(DONE_KEY, STARTED_KEY)
        for i, (template, parameters) in enumerate(
            [(MARKET, {"topic": "warm-up", "depth": MARKET_DEPTH}), (SYNTHETIC, {})]
        ):
            canvas(f"warm-{i}", shape(template, parameters)).apply_async()
        wait_done(2, 180)
        client.delete(DONE_KEY, STARTED_KEY, *[TIMES_KEY + w for w in CONCURRENCY])
        load_before = os.getloadavg()
        roles = {q.removeprefix("bare."): [p.pid] for q, p in fleet.processes.items()}
        cpu_before = cpu_by_role(roles)
        canvases = [
            (f"bare-{i}", canvas(f"bare-{i}", shape(t, p))) for i, (t, p) in enumerate(requests)
        ]
        sent: dict[str, float] = {}
        began = time.time()
        for run, signature in canvases:
            sent[run] = time.time()
            signature.apply_async()
        wait_done(len(requests), 1800)
        done, started = scores(client, DONE_KEY), scores(client, STARTED_KEY)
        times = {w: [float(t) for t in client.lrange(TIMES_KEY + w, 0, -1)] for w in CONCURRENCY}
        cpu_after = cpu_by_role(roles)
        cpu = {role: cpu_after[role] - cpu_before[role] for role in roles}
    finally:
        fleet.stop()
    return {
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "runs_per_s": len(done) / (max(done.values()) - began),
        "elapsed_s": max(done.values()) - began,
        "steady_per_s": steady_rate(list(done.values())),
        "stage_times": {w: t for w, t in times.items() if t},
        "cpu": cpu,
        "first_stage": [started[r] - sent[r] for r in sent if r in started],
    }


def scores(client: redis.Redis, key: str) -> dict[str, float]:
    """A sorted set of run id -> epoch seconds."""
    pairs: Any = client.zrange(key, 0, -1, withscores=True)
    return {member.decode(): float(score) for member, score in pairs}


# -- 3. the load ramp --------------------------------------------------------------------------


def arrival_times(duration_s: float, peak: float) -> list[float]:
    """Arrivals (seconds from the start) whose rate rises linearly from 0 to ``peak`` runs/s at
    half time and falls back to 0: the inverse of the cumulative count, at k + 0.5."""
    total = peak * duration_s / 2
    out = []
    for k in range(int(total)):
        c = k + 0.5
        if c <= total / 2:
            out.append((c * duration_s / peak) ** 0.5)
        else:
            out.append(duration_s - ((total - c) * duration_s / peak) ** 0.5)
    return out


@dataclass
class PoolLog:
    """Pool sizes per worker type over time, from ``orchestrator workers``' own lines."""

    initial: int
    changes: list[tuple[float, str, int]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def follow(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("workers up"):
                ready.set()
            # "bench_nap: 1 -> 3 processes (reason)"
            head, _, rest = line.partition(": ")
            if " -> " in rest and "processes" in rest:
                size = int(rest.split(" -> ")[1].split()[0])
                self.changes.append((time.time(), head.strip(), size))

    def worker_seconds(self, worker: str, start: float, stop: float) -> float:
        size, at, total = self.initial, start, 0.0
        for when, kind, new in self.changes:
            if kind != worker:
                continue
            if when > at:
                total += size * (min(when, stop) - at)
                at = min(when, stop)
            size = new
        return total + size * max(0.0, stop - at)

    def peak(self, worker: str) -> int:
        return max([self.initial] + [n for _, k, n in self.changes if k == worker])


def ramp(stack: Stack, autoscale: bool) -> dict[str, Any]:
    """One ramp of bench_burst runs through ``orchestrator workers`` [--autoscale]."""
    stack.forget_history()
    initial = 1 if autoscale else CONCURRENCY[NAP]
    command = [sys.executable, "-m", "orchestrator.cli", "workers", "--no-beat", "-c", str(initial)]
    process = subprocess.Popen(
        command + (["--autoscale"] if autoscale else []),
        env=child_env(stack.settings),
        stdout=subprocess.PIPE,
        stderr=(stack.settings.data_dir / f"workers-{autoscale}.log").open("ab"),
        text=True,
        start_new_session=True,
    )
    pools = PoolLog(initial)
    ready = threading.Event()
    reader = threading.Thread(target=pools.follow, args=(process, ready), daemon=True)
    reader.start()
    try:
        if not ready.wait(180):
            raise RuntimeError(f"orchestrator workers did not start: {pools.lines[-5:]}")
        load_before = os.getloadavg()
        times = arrival_times(RAMP_S, RAMP_PEAK)
        began = time.time()
        answers: list[Any] = []
        with ThreadPoolExecutor(POSTERS) as pool:
            for i, at in enumerate(times):
                time.sleep(max(0.0, began + at - time.time()))
                answers.append(pool.submit(stack.post, i, SYNTHETIC, {"width": 4, "seconds": 0.2}))
            accepted = [a.result()[1] for a in answers if a.result()[1]]
        stack.wait_ended(accepted, RAMP_S + 600)
        rows = RunRows.read(stack.runtime, accepted)
        load_after = os.getloadavg()
    finally:
        process.send_signal(signal.SIGTERM)  # stops its fleet, as Ctrl-C does
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            end(process, signal.SIGKILL)  # type: ignore[arg-type]
        reader.join(5)
    last_end = max(c for _, c, _, _ in rows.runs.values() if c is not None)
    deps = depends_map(stack.runtime, [(SYNTHETIC, {"width": 4, "seconds": 0.2})])
    deployed = [*MARKET_TYPES, NAP]
    return {
        "autoscale": autoscale,
        "load_before": load_before,
        "load_after": load_after,
        "runs": len(accepted),
        "completed": sum(1 for v in rows.runs.values() if v[2] == "completed"),
        "queue_waits": rows.queue_waits(deps),
        "first_stage": rows.first_stage_waits(),
        "latency": [c - r for r, c, _, _ in rows.runs.values() if c is not None],
        "window_s": last_end - began,
        "nap_worker_s": pools.worker_seconds(NAP, began, last_end),
        "fleet_worker_s": sum(pools.worker_seconds(w, began, last_end) for w in deployed),
        "nap_peak": pools.peak(NAP),
        "resizes": [line for line in pools.lines if " -> " in line],
    }


# -- the report ------------------------------------------------------------------------------


def revision() -> str:
    """The commit measured, and whether the working tree held changes beyond it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    dirty = any(
        line[3:].startswith(("orchestrator/", "workers/", "resources.yaml"))
        for line in git("status", "--porcelain").splitlines()
    )
    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return f"commit {head}" + (" + uncommitted engine changes" if dirty else "")


def ms(values: list[float], q: float) -> str:
    return f"{pct(values, q) * 1000:.0f} ms"


def report(
    burst: dict[str, Any], bare: dict[str, Any], ramps: list[dict[str, Any]], took_s: float
) -> list[str]:
    counts = burst["counts"]
    ratio = burst["runs_per_s"] / bare["runs_per_s"]
    market = sum(1 for t, _ in burst_requests(RUNS) if t == MARKET)
    lines = [
        f"burst benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores; "
        f"orchestrator api (gunicorn, 1 gevent worker), orchestrator beat, celery workers, "
        f"Redis DB {REDIS_DB}, PostgreSQL {PG_DATABASE}, private weed mini; {revision()}",
        "workers (prefork processes = capacity slots): "
        + ", ".join(f"{q} {c}" for q, c in CONCURRENCY.items()),
        "",
        f"1. burst of {burst['posted']} runs posted at once through POST /execute ({POSTERS} "
        f"threads, {CLIENTS} client keys): {market} {MARKET} (depth {MARKET_DEPTH}, shipped "
        f"corpus, offline) + {burst['posted'] - market} {SYNTHETIC} (nap 0.1 s, 4 x 0.2 s, "
        f"0.05 s)",
        f"  load average at start {burst['load_before'][0]:.2f} / {burst['load_before'][1]:.2f}"
        f" (1 / 5 min), at end {burst['load_after'][0]:.2f} / {burst['load_after'][1]:.2f}",
        f"  accepted (202) {burst['accepted']} of {burst['posted']} in {burst['post_s']:.1f} s "
        f"(answers {dict(burst['answers'])}); POST /execute answered in p50 "
        f"{ms(burst['post_latency'], 0.5)}, p99 {ms(burst['post_latency'], 0.99)}; "
        f"transport errors posted again with the same request_id: "
        f"{dict(burst['transport_errors']) or 'none'}",
        f"  ended: completed {counts['completed']}, failed {counts['failed']}, cancelled "
        f"{counts['cancelled']}, other {sum(v for k, v in counts.items() if k not in TERMINAL)}"
        f" (GET /executions); lost = accepted - ended = {burst['lost']}",
        f"  left after: {burst['held']}  (GET /resources, queue lengths)",
        f"  throughput: engine {burst['runs_per_s']:.2f} runs/s ({burst['elapsed_s']:.1f} s "
        f"first POST to last completion), bare Celery {bare['runs_per_s']:.2f} runs/s "
        f"({bare['elapsed_s']:.1f} s); engine / bare {ratio:.2f}  (target >= 0.6: "
        f"{'met' if ratio >= 0.6 else 'NOT met'})",
        f"    steady pace (10th to 90th percentile completion): engine "
        f"{burst['steady_per_s']:.2f} runs/s, bare {bare['steady_per_s']:.2f} runs/s, ratio "
        f"{burst['steady_per_s'] / bare['steady_per_s']:.2f}; the engine's runs went through "
        f"POST /execute at {burst['accepted'] / burst['post_s']:.1f} per second, the bare "
        f"canvases straight to the broker",
        f"  submit to first stage: engine p50 {ms(burst['first_stage'], 0.5)}, p99 "
        f"{ms(burst['first_stage'], 0.99)}; bare p50 {ms(bare['first_stage'], 0.5)}, p99 "
        f"{ms(bare['first_stage'], 0.99)}",
    ]
    for template, waits in burst["first_stage_by_template"].items():
        lines.append(
            f"    engine, {template}: p50 {ms(waits, 0.5)}, p99 {ms(waits, 0.99)} ({len(waits)})"
        )
    lines.append(
        "  stage time by worker type, median (engine: the stage row's start to end, inputs "
        "read and output written included | bare: the function alone): "
        + ", ".join(
            f"{w} {ms(burst['stage_times'].get(w, []), 0.5)} | "
            f"{ms(bare['stage_times'].get(w, []), 0.5)}"
            for w in CONCURRENCY
            if w != COORDINATOR_QUEUE
        )
    )
    per_run = {k: v / burst["accepted"] for k, v in burst["cpu"].items()}
    bare_run = {k: v / RUNS for k, v in bare["cpu"].items()}
    stage_types = [w for w in CONCURRENCY if w != COORDINATOR_QUEUE]
    engine_cpu, bare_cpu = sum(per_run.values()), sum(bare_run.values())
    lines += [
        f"  CPU seconds per run, the bench's own processes (the machine's other load, Redis "
        f"and PostgreSQL not counted): engine {engine_cpu:.3f} (API {per_run['API']:.3f}, beat "
        f"{per_run['beat']:.3f}, coordinator {per_run['coordinator']:.3f}, stage workers "
        f"{sum(per_run[w] for w in stage_types):.3f}), bare Celery workers {bare_cpu:.3f}; "
        f"engine / bare {engine_cpu / bare_cpu:.2f}",
        "    by worker type, engine | bare: "
        + ", ".join(f"{w} {per_run[w]:.3f} | {bare_run.get(w, 0.0):.3f}" for w in stage_types),
    ]
    bottleneck = max(burst["share"], key=burst["share"].get)
    lines += [
        f"  busy share of each type's slots while runs were waiting to start (first POST to "
        f"the last run's first stage, {burst['backlog_s']:.1f} s), from the stage rows "
        f"[sampled slots held, GET /resources each second]:",
        "    "
        + ", ".join(
            f"{w} {v:.0%} [{burst['sampled'].get(w, float('nan')):.0%}]"
            for w, v in sorted(burst["share"].items(), key=lambda kv: -kv[1])
        ),
        f"  bottleneck worker type {bottleneck}: {burst['share'][bottleneck]:.0%} busy during "
        f"the backlog  (target >= 80%: "
        f"{'met' if burst['share'][bottleneck] >= 0.8 else 'NOT met'}); GET /resources 1m "
        f"utilization at {burst['util_1m_at']:.0f} s: "
        f"{burst['util_1m'].get(bottleneck, float('nan')):.0%}"
        + (" (the window still holds idle time before the burst)" * (burst["util_1m_at"] < 60)),
        f"  bare Celery load average at start {bare['load_before'][0]:.2f}, at end "
        f"{bare['load_after'][0]:.2f}",
        "",
    ]
    if not ramps:  # BENCH_BURST_RAMP_S=0
        return [
            *lines,
            f"whole bench {took_s:.0f} s; load average at the end {os.getloadavg()[0]:.2f}",
        ]
    lines += [
        f"2. load ramp: {SYNTHETIC} arrivals rising linearly to {RAMP_PEAK:g} runs/s and back "
        f"to 0 over {RAMP_S:.0f} s ({len(arrival_times(RAMP_S, RAMP_PEAK))} runs), "
        f"`orchestrator workers` fixed at {CONCURRENCY[NAP]} processes per type vs "
        f"`--autoscale` from 1 (bench_nap capacity {CONCURRENCY[NAP]})",
        f"  {'':22s}{'autoscale off':>16s}{'autoscale on':>16s}",
    ]
    off, on = sorted(ramps, key=lambda r: r["autoscale"])

    def row(label: str, a: str, b: str) -> str:
        return f"  {label:22s}{a:>16s}{b:>16s}"

    lines += [
        row("runs completed", *(f"{r['completed']}/{r['runs']}" for r in (off, on))),
        row("queue wait p50", ms(off["queue_waits"], 0.5), ms(on["queue_waits"], 0.5)),
        row("queue wait p95", ms(off["queue_waits"], 0.95), ms(on["queue_waits"], 0.95)),
        row("submit->1st stage p95", ms(off["first_stage"], 0.95), ms(on["first_stage"], 0.95)),
        row("run time p95", ms(off["latency"], 0.95), ms(on["latency"], 0.95)),
        row("bench_nap worker-s", f"{off['nap_worker_s']:.0f}", f"{on['nap_worker_s']:.0f}"),
        row("all types worker-s", f"{off['fleet_worker_s']:.0f}", f"{on['fleet_worker_s']:.0f}"),
        row("bench_nap peak pool", str(off["nap_peak"]), str(on["nap_peak"])),
        row("window", f"{off['window_s']:.0f} s", f"{on['window_s']:.0f} s"),
        row(
            "load avg start/end",
            f"{off['load_before'][0]:.2f}/{off['load_after'][0]:.2f}",
            f"{on['load_before'][0]:.2f}/{on['load_after'][0]:.2f}",
        ),
        "  (queue wait: a stage's start minus when it became ready; worker-s: pool processes x "
        "seconds from the first arrival to the last completion)",
        "  autoscaler resizes: " + ("; ".join(on["resizes"]) or "none"),
        "",
        f"whole bench {took_s:.0f} s; load average at the end {os.getloadavg()[0]:.2f}",
    ]
    return lines


def serve_corpus(port: int) -> subprocess.Popen[bytes]:
    """The shipped corpus from a process of its own, as a real site would be: a feed worker
    serves it from one of its processes only when nothing answers on the port, and that
    process would then share its GIL with stage work in one burst and idle in the other."""
    code = (
        "import sys, threading; from workers.lib.corpus import CorpusServer; "
        "CorpusServer(int(sys.argv[1])); threading.Event().wait()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(port)], cwd=ROOT, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while not answers_as_corpus(port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the corpus server did not start on port {port}")
        time.sleep(0.1)
    return process


def main() -> None:
    began = time.perf_counter()
    base = bench_settings(REDIS_DB, "orch-bench-burst-")
    weed = WeedServer(
        base.data_dir / "s3", base.s3_access_key, base.s3_secret_key.get_secret_value()
    )
    settings = base.with_overrides(
        database_url=fresh_database(),
        s3_endpoint=weed.endpoint,
        s3_embedded=False,
        resources_file=bench_resources(base.data_dir),
        worker_modules=("workers", "bench.burst_workers"),
        corpus_port=free_ports(1)[0],
    )
    stack = corpus = None
    try:
        weed.start(lambda: ObjectStore(settings).ping())
        corpus = serve_corpus(settings.corpus_port)
        stack = start_stack(settings)
        requests = burst_requests(RUNS)
        burst = engine_burst(stack, requests)
        print(f"engine burst: {burst['runs_per_s']:.2f} runs/s", flush=True)
        bare = bare_burst(stack, requests)
        print(f"bare burst: {bare['runs_per_s']:.2f} runs/s", flush=True)
        ramps = [ramp(stack, autoscale) for autoscale in (False, True)] if RAMP_S > 0 else []
        lines = report(burst, bare, ramps, time.perf_counter() - began)
    finally:
        if corpus is not None:
            end(corpus, signal.SIGTERM)
        if stack is not None:
            end(stack.beat, signal.SIGTERM)
            end(stack.api, signal.SIGTERM)
            stack.runtime.close()
        weed.stop()
    text = "\n".join(lines) + "\n"
    write_results("burst.txt", text)
    print(text)


if __name__ == "__main__":
    main()
