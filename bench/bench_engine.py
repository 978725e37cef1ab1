"""Engine overhead against bare Celery on the same workers and broker.

1. A 40-stage no-op pipeline through the engine vs a bare chain of 40 no-op tasks. The
   per-stage overhead of each is the slope between a 10- and a 40-long pipeline, so fixed
   costs (the engine's submit, admission and finish; the chain's build, send and result
   wait) fall out of both sides alike; totals at 40 are printed too. Engine and bare runs
   alternate, so a neighbour's load burst does not land on one side only.
2. Fan-in wait: 10-way and 200-way fan-out through the engine vs a plain chord.
3. Through the API, as a user sees it: ``POST /execute`` and the SSE stream read to the final
   event, for 10 and 40 stages and a 10-way fan-out + join, alternating with bare Celery;
   and how long after the 202 the first event arrives.

Writes bench/results/engine.txt. Run with ``make bench`` (or ``python bench/bench_engine.py``).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import httpx
from celery import chain, chord, group, signature
from kombu import Exchange, Queue

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import bench_settings, write_results
from orchestrator import template_registry
from orchestrator.auth import Scope, create_key
from orchestrator.core.planner import plan as make_plan
from orchestrator.core.templates import parse_template
from orchestrator.engine import coordinator, events
from orchestrator.engine.canvas import build_canvas, finish_task_id
from orchestrator.engine.events import stage_event, stream_key
from orchestrator.engine.run_state import RunMeta, RunState
from orchestrator.ops import migrations
from orchestrator.ops.supervisor import start_api, start_fleet
from orchestrator.runtime import Runtime
from orchestrator.storage.embedded import ensure_running

REDIS_DB = 10
STAGES = 40
SHORT = 10
REPEATS = 7
API_PORT = 18765
#: Each measured run starts this long after the one before: what a run leaves behind after it
#: is observed to end (Celery's results and events, the coordinator's last writes) must not be
#: charged to whatever is measured next (the API runs were slower in some positions only).
SETTLE_S = 0.05


def linear(n: int) -> dict:
    stages = [{"id": "s0", "worker": "echo", "action": "noop"}]
    stages += [
        {"id": f"s{i}", "worker": "echo", "action": "noop", "depends_on": [f"s{i - 1}"]}
        for i in range(1, n)
    ]
    return {"name": f"bench_linear_{n}", "stages": stages}


def fanout(width: int) -> dict:
    return {
        "name": f"bench_fanout_{width}",
        "stages": [
            {"id": "source", "worker": "echo", "action": "noop"},
            {
                "id": "branch",
                "worker": "echo",
                "action": "noop",
                "depends_on": ["source"],
                "shards": width,
            },
            {"id": "sink", "worker": "echo", "action": "noop", "depends_on": ["branch"]},
        ],
    }


def run_engine(
    runtime: Runtime,
    name: str,
    phases: list[tuple[float, float, float]] | None = None,
    ids: list[str] | None = None,
    marks: dict[str, tuple[float, float]] | None = None,
) -> float:
    """Wall time of one run; ``phases`` gets (start overhead, finish overhead) in seconds,
    ``marks`` the run's id -> (submitted, seen ended) in epoch ms.

    The wait is a Celery result wait on the run's ``coordinator.finish`` task, as for the
    bare chain (following the event stream live would wake this process twice per stage);
    the events are read afterwards for the phases and the final status.
    """
    time.sleep(SETTLE_S)
    started = time.perf_counter()
    submitted_ms = time.time() * 1000
    execution, _ = coordinator.submit(runtime, name, {})
    execution_id = execution.execution_id
    if ids is not None:
        ids.append(execution_id)
    launch = None
    while launch is None:
        raw = runtime.redis.hget(f"orch:run:{execution_id}", "launch")
        launch = json.loads(raw) if raw else None
        if launch is None:
            time.sleep(0.002)
    runtime.celery.AsyncResult(finish_task_id(execution_id, launch)).get(
        timeout=300, interval=0.002
    )
    elapsed = time.perf_counter() - started
    if marks is not None:
        marks[execution_id] = (submitted_ms, submitted_ms + elapsed * 1000)
    stamps = [(int(i.split("-")[0]), e) for i, e in events.read(runtime.redis, execution_id)]
    assert stamps[-1][1]["type"] == "final" and stamps[-1][1]["status"] == "completed", stamps[-1]
    if phases is not None:
        first_stage = min(ms for ms, e in stamps if e["type"] == "stage")
        last_stage = max(ms for ms, e in stamps if e["type"] == "stage")
        final = stamps[-1][0]
        first_event = stamps[0][0]
        phases.append(
            (
                (first_stage - submitted_ms) / 1000,
                (final - last_stage) / 1000,
                (first_event - submitted_ms) / 1000,
            )
        )
    return elapsed


def through_api(client: httpx.Client, name: str) -> tuple[float, float]:
    """What a user sees: ``POST /execute``, then the run's SSE stream read to its final
    event. Returns (POST to final event, 202 to the first event) in seconds."""
    time.sleep(SETTLE_S)
    started = time.perf_counter()
    body = {"template_name": name, "parameters": {}, "request_id": uuid.uuid4().hex}
    response = client.post("/execute", json=body)
    accepted = time.perf_counter()
    assert response.status_code == 202, response.text
    first = None
    with client.stream("GET", response.json()["progress_url"]) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and first is None:
                first = time.perf_counter()
            if line == "event: final":
                break
    assert first is not None
    return time.perf_counter() - started, first - accepted


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


STEPS = {
    "inputs": "read spec, meta, packets and take the capacity slot (1 round trip)",
    "cache": "cache lookup",
    "slot": "note the start (its record and event go out with the stage's end)",
    "read": "read inputs by reference",
    "function": "the worker's function",
    "write": "write the output",
    "settle": "settle usage, build the packet",
}


#: The queue the hop's publish is timed on: declared by the publish, consumed by nobody, and
#: deleted after.
PROBE_QUEUE = "bench-hop-probe"


def hop_legs(runtime: Runtime, execution_id: str, repeats: int = 200) -> tuple[float, float]:
    """Median ms of the hop's first two legs, timed here on the same Redis and broker: a
    stage end's round trip (its slot release, record, packet and both events, as the stage
    writes them, on a scratch copy of a measured run) and Celery's publish of the next stage
    (its signature popped off the rest of the run's chain, as Celery's tracer does, sent to
    a queue nobody reads). The rest of the hop is the broker and the next worker's receive."""
    state = RunState(runtime.redis)
    records, packets = state.stages(execution_id), state.packets(execution_id)
    order = sorted(records, key=lambda s: records[s]["order"])
    middle = order[len(order) // 2]
    meta = {k: v for k, v in state.meta(execution_id).items() if k != "finishing"}
    scratch = f"exec_hop{uuid.uuid4().hex[:16]}"
    state.create(scratch, meta | {"status": "running"}, {middle: {}})  # type: ignore[arg-type]
    ends = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipe = runtime.redis.pipeline(transaction=False)
        runtime.admission.release_slot("echo", f"{scratch}:{middle}", client=pipe)
        state.record(
            scratch,
            middle,
            records[middle],
            event=stage_event(middle, "completed", "done", 100.0, 0),
            packet=packets[middle],
            pipe=pipe,
            earlier=stage_event(middle, "running", "started", 0.0, 0),
        )
        pipe.execute()
        ends.append(time.perf_counter() - started)
    state.drop(scratch)
    runtime.redis.delete(stream_key(scratch))
    # The rest of the run's chain after the middle stage, as its message carries it.
    specs: dict[str, dict[str, Any]] = {
        s: {"worker": "echo", "depends_on": [order[i - 1]] if i else [], "timeout_s": 300}
        for i, s in enumerate(order)
    }
    canvas = build_canvas(
        runtime.celery,
        scratch,
        make_plan({s: spec["depends_on"] for s, spec in specs.items()}),
        specs,
        priority=3,
        launch=str(meta.get("launch")),
    )
    rest = cast(Any, canvas).tasks[order.index(middle) + 1 :]
    probe = Queue(PROBE_QUEUE, Exchange("orchestrator", type="direct"), routing_key=PROBE_QUEUE)
    publishes = []
    for _ in range(repeats):
        steps = [dict(task) for task in reversed(rest)]
        started = time.perf_counter()
        following = signature(steps.pop(), app=runtime.celery)
        following.apply_async((None,), chain=steps, queue=probe, priority=3)
        publishes.append(time.perf_counter() - started)
    runtime.redis.delete(*runtime.redis.keys(f"{PROBE_QUEUE}*"))
    return median_ms(ends), median_ms(publishes)


def floor_model(
    runtime: Runtime, execution_id: str
) -> tuple[RunMeta, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """What a floor chain runs on: a measured run's meta (running again), plan and packets;
    the record, packet and events of its middle stage, which every floor task writes, are
    left under ``FLOOR_KEY``."""
    from bench.noop_app import FLOOR_KEY

    state = RunState(runtime.redis)
    records, packets = state.stages(execution_id), state.packets(execution_id)
    order = sorted(records, key=lambda s: records[s]["order"])
    middle = order[len(order) // 2]
    meta = cast(dict[str, Any], state.meta(execution_id))
    meta = {k: v for k, v in meta.items() if k != "finishing"} | {"status": "running"}
    payload = [
        records[middle],
        packets[middle],
        stage_event(middle, "running", "started", 0.0, 0),
        stage_event(middle, "completed", "done", 100.0, 0),
    ]
    runtime.redis.set(FLOOR_KEY, json.dumps(payload))
    return cast(RunMeta, meta), state.plan(execution_id), packets


def breakdown(runtime: Runtime, ids: list[str], bare_hops: list[float]) -> list[str]:
    """Where a stage's time goes, from the timings each stage keeps in its live record: the
    steps inside the stage task, and the hop from one stage's end to the next one's start
    (its completion round trip, Celery's publish of the next message, the broker, the
    worker's receive and dispatch). Medians over the stages of the measured runs."""
    steps: dict[str, list[float]] = {step: [] for step in STEPS}
    hops: list[float] = []
    for execution_id in ids:
        records = RunState(runtime.redis).stages(execution_id)
        ordered = sorted(records.values(), key=lambda r: r["order"])
        timings = [r.get("timing") or {} for r in ordered]
        for timing in timings:
            for step in STEPS:
                if step in timing:
                    steps[step].append(timing[step])
        hops += [
            b["entered_at"] - a["done_at"]
            for a, b in pairwise(timings)
            if "done_at" in a and "entered_at" in b
        ]
    if not hops:
        return ["  (no stage timings recorded)"]
    lines = ["  where a stage's time goes (median ms per stage, from the stages' own timings):"]
    for step, what in STEPS.items():
        lines.append(f"    {step:9s} {statistics.median(steps[step]):6.3f}  {what}")
    inside = sum(statistics.median(v) for v in steps.values() if v)
    hop = statistics.median(hops)
    end_ms, publish_ms = hop_legs(runtime, ids[-1])
    lines += [
        f"    inside the stage task {inside:.3f} ms; hop to the next stage {hop:.3f} ms:",
        f"    end        {end_ms:6.3f}  the stage's end: slot release, record, packet and its "
        "events (1 round trip)",
        f"    publish    {publish_ms:6.3f}  Celery's publish of the next stage (its message "
        "carries the rest of the chain)",
        f"    broker     {hop - end_ms - publish_ms:6.3f}  the rest: the broker, the next "
        "worker's receive and dispatch to a pool process",
        "    (end and publish timed in the benchmark's process on the same Redis and broker, "
        f"{len(hops)} hops measured in the stages)",
        f"    bare Celery's hop, measured the same way on a lean chain shaped like the engine's: "
        f"{statistics.median(bare_hops):.3f} ms; the engine's own share of a stage (inside "
        f"the task, and its end) {inside + end_ms:.3f} ms",
    ]
    return lines


#: A fan-out + join's phases, in order, for both systems (ms, epoch-based).
JOIN_PHASES = {
    "to source": "submit (bare: apply) to the source's start",
    "source": "the source stage's task body",
    "fan-out": "the source's end to the first branch's start",
    "branches": "the first branch's start to the last one's end (2 worker processes)",
    "fan-in": "the last branch's end to the join's start (the chord's count and hop)",
    "join": "the join's task body",
    "to the end": "the join's end to the caller seeing the run end",
}


def join_phases(
    source: tuple[float, float],
    branches: list[tuple[float, float]],
    join: tuple[float, float],
    sent: float,
    ended: float,
) -> dict[str, float]:
    """A fan-out + join's phases from each task body's (start, end) in epoch ms."""
    first, last = min(b[0] for b in branches), max(b[1] for b in branches)
    return {
        "to source": source[0] - sent,
        "source": source[1] - source[0],
        "fan-out": first - source[1],
        "branches": last - first,
        "fan-in": join[0] - last,
        "join": join[1] - join[0],
        "to the end": ended - join[1],
    }


def engine_join_phases(
    runtime: Runtime, execution_id: str, sent: float, ended: float
) -> dict[str, float]:
    """``join_phases`` of an engine run, from its stages' own timings."""
    span = {
        stage: (record["timing"]["entered_at"], record["timing"]["done_at"])
        for stage, record in RunState(runtime.redis).stages(execution_id).items()
    }
    branches = [t for stage, t in span.items() if stage not in {"source", "sink"}]
    return join_phases(span["source"], branches, span["sink"], sent, ended)


def join_breakdown(engine: list[dict[str, float]], bare: list[dict[str, float]]) -> list[str]:
    lines = [
        "  where a fan-out 10 + join's time goes (median ms; task bodies as the stages time "
        "them, the bare chord's as stamp tasks note them):",
        f"    {'':12s} {'engine':>8s} {'chord':>8s}",
    ]
    for phase, what in JOIN_PHASES.items():
        e = statistics.median(p[phase] for p in engine)
        b = statistics.median(p[phase] for p in bare)
        lines.append(f"    {phase:12s} {e:8.2f} {b:8.2f}  {what}")
    return lines


def fan_section(runtime: Runtime, noop: Any, stamp: Any) -> list[str]:
    """Fan-out 10 and 200 + join against a chord of the same shape, then where a 10-way
    join's time goes in each, from the task bodies' own timings."""
    from bench.noop_app import STAMPS_KEY

    lines: list[str] = []
    for width in (10, 200):
        engine_f = [run_engine(runtime, f"bench_fanout_{width}") for _ in range(3)]
        plain = []
        for _ in range(3):
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            chain(
                noop.s(), chord(group(noop.s() for _ in range(width)), noop.s())
            ).apply_async().get(timeout=120, interval=0.002)
            plain.append(time.perf_counter() - started)
        e_ms, p_ms = median_ms(engine_f), median_ms(plain)
        lines.append(
            f"fan-out {width:3d} + fan-in: engine {e_ms:8.1f} ms, plain chord "
            f"{p_ms:8.1f} ms, ratio {e_ms / p_ms:5.2f} (median of 3)"
        )

    def stamped_chord() -> dict[str, float]:
        """A chord of stamp tasks (source, 10 branches, join): each body's start and end."""
        runtime.redis.delete(STAMPS_KEY)
        time.sleep(SETTLE_S)
        sent = time.time() * 1000
        chain(stamp.s(), chord(group(stamp.s() for _ in range(10)), stamp.s())).apply_async(
        ).get(timeout=60, interval=0.002)  # fmt: skip
        ended = time.time() * 1000
        spans = [
            tuple(float(t) * 1000 for t in raw.split())
            for raw in runtime.redis.lrange(STAMPS_KEY, 0, -1)
        ]  # in the order the bodies ended: the source first, the join last
        return join_phases(spans[0], spans[1:-1], spans[-1], sent, ended)  # type: ignore[arg-type]

    marks: dict[str, tuple[float, float]] = {}
    bare_joins = []
    for _ in range(REPEATS):
        run_engine(runtime, "bench_fanout_10", marks=marks)
        bare_joins.append(stamped_chord())
    engine_joins = [engine_join_phases(runtime, run, *mark) for run, mark in marks.items()]
    return [*lines, *join_breakdown(engine_joins, bare_joins)]


def api_section(
    settings: Any,
    bare: Callable[[int], float],
    out_of_the_box: Callable[[int], float],
    noop: Any,
) -> list[str]:
    """Through the API as a user sees it, alternating with bare Celery, workload by workload."""
    key = create_key(Runtime(settings).db, Scope.CLIENT, client_id="bench", label="bench engine")
    api = start_api(settings, API_PORT)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        url = f"http://127.0.0.1:{API_PORT}"
        with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
            through_api(client, f"bench_linear_{STAGES}")  # warm up
            runs: dict[str, list[float]] = {}
            firsts: list[float] = []

            def api_run(name: str) -> float:
                total, first = through_api(client, name)
                firsts.append(first)
                return total

            def plain_chord() -> float:
                time.sleep(SETTLE_S)
                started = time.perf_counter()
                chain(
                    noop.s(), chord(group(noop.s() for _ in range(10)), noop.s())
                ).apply_async().get(timeout=60, interval=0.002)
                return time.perf_counter() - started

            jobs: list[tuple[str, Callable[[], float]]] = []
            for n in (SHORT, STAGES):
                jobs += [
                    (f"api{n}", partial(api_run, f"bench_linear_{n}")),
                    (f"bare{n}", partial(bare, n)),
                    (f"default{n}", partial(out_of_the_box, n)),
                ]
            jobs += [("api_fan", partial(api_run, "bench_fanout_10")), ("chord", plain_chord)]
            # Each round starts one job later, so every workload follows each of the others
            # in turn: none is always measured right after the same neighbour.
            for round_ in range(REPEATS):
                for name, job in jobs[round_ % len(jobs) :] + jobs[: round_ % len(jobs)]:
                    runs.setdefault(name, []).append(job())
    finally:
        api.terminate()
        api.wait(10)
    m = {key: median_ms(values) for key, values in runs.items()}
    span = STAGES - SHORT

    def per_stage(kind: str) -> float:
        return (m[f"{kind}{STAGES}"] - m[f"{kind}{SHORT}"]) / span

    row = "    {:<38s} {:>9.1f} {:>9.1f} {:>9.2f} {:>12.1f}"
    return [
        f"through the API (POST /execute, SSE read to the final event; orchestrator api, "
        f"median of {REPEATS}, alternating with bare Celery; load average "
        f"{os.getloadavg()[0]:.1f}):",
        f"    {'':38s} {SHORT:>6d} st {STAGES:>6d} st {'ms/stage':>9s} {'fan 10+join':>12s}",
        row.format("orchestrator, POST to final SSE event", m[f"api{SHORT}"], m[f"api{STAGES}"],
                   per_stage("api"), m["api_fan"]),
        row.format("bare chain / chord, same settings", m[f"bare{SHORT}"], m[f"bare{STAGES}"],
                   per_stage("bare"), m["chord"]),
        row.format("bare chain, Celery's defaults", m[f"default{SHORT}"], m[f"default{STAGES}"],
                   per_stage("default"), float("nan")),
        f"    ratio per stage {per_stage('api') / per_stage('bare'):.2f} (goal <= 1.2), "
        f"fan 10 + join {m['api_fan'] / m['chord']:.2f} (goal <= 1.2)",
        f"    202 to the first SSE event: median {statistics.median(firsts) * 1000:.1f} ms, "
        f"max {max(firsts) * 1000:.1f} ms (goal <= 20)",
    ]  # fmt: skip


def main() -> None:
    # The product's default (task events off); BENCH_TASK_EVENTS=true measures with them.
    settings = bench_settings(REDIS_DB, "orch-bench-")
    events_on = os.environ.get("BENCH_TASK_EVENTS", str(settings.task_events)).lower() == "true"
    settings = settings.with_overrides(task_events=events_on)
    s3 = ensure_running(settings.with_overrides(data_dir=ROOT / "var" / "bench-s3"))
    migrations.upgrade(settings)
    os.environ.update(settings.to_env())
    # built from the same environment as the workers
    from bench.noop_app import STAMPS_KEY, app, floor, noop, noop_kw, stamp

    runtime = Runtime(settings, app)
    runtime.redis.flushdb()
    known = template_registry.known_workers(runtime)
    for definition in (linear(STAGES), linear(SHORT), fanout(10), fanout(200)):
        template_registry.put(runtime.db, parse_template(definition), known)
    fleet = start_fleet(
        settings, app, queues=["coordinator", "echo"], concurrency=2, app_module="bench.noop_app"
    )
    from bench.default_app import app as default_app
    from bench.default_app import noop as default_noop

    plain_fleet = start_fleet(
        settings, default_app, queues=["plain"], concurrency=2, app_module="bench.default_app"
    )
    lines = []
    try:

        def bare(n: int, lean: bool = False) -> float:
            """A plain chain; ``lean`` sets what the engine sets on a stage that feeds no
            chord: ``ignore_result`` (every task but the last, whose result we wait on)."""
            tasks = [noop.s().set(ignore_result=lean) for _ in range(n - 1)] + [noop.s()]
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            chain(*tasks).apply_async().get(timeout=60, interval=0.002)
            return time.perf_counter() - started

        def shaped_tasks(task: Any, n: int, run: tuple[str, str] | None = None) -> list[Any]:
            """``n - 1`` signatures of ``task`` whose messages are shaped like the engine's:
            a stage's kwargs, its priority and time limits, immutable, no result; ``run``:
            the execution id and launch they name (random ones by default)."""
            return [
                task.signature(
                    kwargs={
                        "execution_id": run[0] if run else f"exec_{uuid.uuid4().hex[:20]}",
                        "stage_id": f"s{i}",
                        "deps": [f"s{i - 1}"] if i else [],
                        "launch": run[1] if run else uuid.uuid4().hex[:12],
                    },
                    immutable=True,
                    ignore_result=True,
                    soft_time_limit=300,
                    time_limit=330,
                    priority=3,
                )
                for i in range(n - 1)
            ]

        def bare_hops() -> list[float]:
            """The hops of a lean chain shaped like the engine's, measured as the engine's
            are: each task body notes its start and end, and a hop is the next body's start
            less the previous body's end (Celery's publish, the broker, the receive)."""
            hops: list[float] = []
            for _ in range(3):
                runtime.redis.delete(STAMPS_KEY)
                tasks = shaped_tasks(stamp, STAGES)
                time.sleep(SETTLE_S)
                chain(*tasks, noop.s()).apply_async().get(timeout=60, interval=0.002)
                stamps = [
                    [float(t) for t in raw.split()]
                    for raw in runtime.redis.lrange(STAMPS_KEY, 0, -1)
                ]
                hops += [(b[0] - a[1]) * 1000 for a, b in pairwise(stamps)]
            return hops

        def shaped(n: int) -> float:
            """A lean chain whose messages are shaped like the engine's (what the message
            costs, apart from the engine)."""
            tasks = shaped_tasks(noop_kw, n)
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            chain(*tasks, noop.s()).apply_async().get(timeout=60, interval=0.002)
            return time.perf_counter() - started

        def out_of_the_box(n: int) -> float:
            """A plain chain on an app with Celery's defaults, same broker, same c=2."""
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            chain(*[default_noop.s() for _ in range(n)]).apply_async().get(
                timeout=60, interval=0.002
            )
            return time.perf_counter() - started

        def floor_chain(n: int) -> float:
            """A lean chain shaped like the engine's whose tasks make only the two round
            trips the engine's contract asks of a stage (``bench.noop_app.floor``), on a
            fresh scratch copy of a measured run."""
            scratch = f"exec_floor{uuid.uuid4().hex[:16]}"
            RunState(runtime.redis).create(scratch, *model)
            tasks = shaped_tasks(floor, n, (scratch, str(model[0].get("launch"))))
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            chain(*tasks, noop.s()).apply_async().get(timeout=60, interval=0.002)
            return time.perf_counter() - started

        warm: list[str] = []
        run_engine(runtime, f"bench_linear_{STAGES}", ids=warm)  # warm up both paths
        model = floor_model(runtime, warm[0])
        bare(STAGES)
        floor_chain(STAGES)
        phases: list[tuple[float, float, float]] = []
        ids: list[str] = []
        engine: dict[int, list[float]] = {STAGES: [], SHORT: []}
        plain: dict[int, list[float]] = {STAGES: [], SHORT: []}
        lean: dict[int, list[float]] = {STAGES: [], SHORT: []}
        defaults: dict[int, list[float]] = {STAGES: [], SHORT: []}
        shapes: dict[int, list[float]] = {STAGES: [], SHORT: []}
        floors: dict[int, list[float]] = {STAGES: [], SHORT: []}
        out_of_the_box(STAGES)
        for _ in range(REPEATS):
            for n in (STAGES, SHORT):
                long = n == STAGES
                engine[n].append(
                    run_engine(
                        runtime,
                        f"bench_linear_{n}",
                        phases if long else None,
                        ids if long else None,
                    )
                )
                plain[n].append(bare(n))
                lean[n].append(bare(n, lean=True))
                shapes[n].append(shaped(n))
                floors[n].append(floor_chain(n))
                defaults[n].append(out_of_the_box(n))
        start_ms = median_ms([p[0] for p in phases])
        finish_ms = median_ms([p[1] for p in phases])
        first_event_ms = median_ms([p[2] for p in phases])
        engine_ms, bare_ms = median_ms(engine[STAGES]), median_ms(plain[STAGES])
        span = STAGES - SHORT
        engine_stage = (engine_ms - median_ms(engine[SHORT])) / span
        bare_stage = (bare_ms - median_ms(plain[SHORT])) / span
        lean_ms = median_ms(lean[STAGES])
        lean_stage = (lean_ms - median_ms(lean[SHORT])) / span
        defaults_stage = (median_ms(defaults[STAGES]) - median_ms(defaults[SHORT])) / span
        shaped_stage = (median_ms(shapes[STAGES]) - median_ms(shapes[SHORT])) / span
        floor_stage = (median_ms(floors[STAGES]) - median_ms(floors[SHORT])) / span
        lines += [
            f"linear pipeline of {STAGES} no-op stages, echo worker prefork c=2, Redis broker, "
            f"task events {'on' if events_on else 'off'}, "
            f"median of {REPEATS} alternating runs (load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores):",
            f"  per-stage overhead (slope from {SHORT} to {STAGES} stages):",
            f"    engine      {engine_stage:6.2f} ms/stage",
            f"    bare chain  {bare_stage:6.2f} ms/stage",
            f"    ratio       {engine_stage / bare_stage:6.2f}   (goal <= 1.2)",
            f"    like for like: a bare chain with ignore_result on its inner tasks, as the "
            f"engine's chained stages have, {lean_stage:.2f} ms/stage; engine / it "
            f"{engine_stage / lean_stage:.2f}",
            f"    lean chain with messages shaped like the engine's (stage kwargs, priority, "
            f"time limits) {shaped_stage:.2f} ms/stage; engine / it "
            f"{engine_stage / shaped_stage:.2f}",
            f"    bare chain with Celery's defaults (no events, early acks, prefetch 4) "
            f"{defaults_stage:.2f} ms/stage; engine / it {engine_stage / defaults_stage:.2f}",
            f"    the floor: that shaped chain's tasks making only the two round trips a stage "
            f"must make, as the engine makes them, and nothing else: {floor_stage:.2f} ms/stage, "
            f"{floor_stage / bare_stage:.2f}x the bare chain, {floor_stage / shaped_stage:.2f}x "
            f"the shaped one; the engine / the floor {engine_stage / floor_stage:.2f}",
            f"  totals at {STAGES} stages (fixed costs included):",
            f"    engine      {engine_ms:8.1f} ms  (submit, admission, coordinator start and "
            f"finish included)",
            f"    bare chain  {bare_ms:8.1f} ms   (ignore_result inside: {lean_ms:.1f} ms)",
            f"    ratio       {engine_ms / bare_ms:8.2f}   (against the lean chain: "
            f"{engine_ms / lean_ms:.2f})",
            f"    of the engine's time: submit to first stage {start_ms:.1f} ms (DB insert, "
            f"admission, plan), last stage to final event {finish_ms:.1f} ms (persist, release)",
            f"    submit to the run's first event (what an SSE subscriber can see first): "
            f"{first_event_ms:.1f} ms",
            *breakdown(runtime, ids, bare_hops()),
            "",
        ]
        lines += fan_section(runtime, noop, stamp)
        lines += ["", *api_section(settings, bare, out_of_the_box, noop)]
    finally:
        fleet.stop()
        plain_fleet.stop()
        s3.stop()
    text = "\n".join(lines) + "\n"
    write_results("engine.txt", text)
    print(text)


if __name__ == "__main__":
    main()
