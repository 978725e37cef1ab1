"""Engine overhead against bare Celery on the same workers and broker.

1. A 40-stage no-op pipeline through the engine vs a bare chain of 40 no-op tasks.
2. Fan-in wait: 10-way and 200-way fan-out through the engine vs a plain chord.

Writes bench/results/engine.txt. Run with ``make bench`` (or ``python bench/bench_engine.py``).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from celery import chain, chord, group

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import coordinator, events, migrations, template_registry  # noqa: E402
from orchestrator.core.templates import parse_template  # noqa: E402
from orchestrator.embedded_s3 import ensure_running  # noqa: E402
from orchestrator.runtime import Runtime  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402
from orchestrator.supervisor import start_fleet  # noqa: E402

REDIS_DB = 10
STAGES = 40
REPEATS = 7


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
    runtime: Runtime, name: str, phases: list[tuple[float, float]] | None = None
) -> float:
    """Wall time of one run; ``phases`` gets (start overhead, finish overhead) in seconds."""
    started = time.perf_counter()
    submitted_ms = time.time() * 1000
    execution, _ = coordinator.submit(runtime, name, {})
    stamps = []
    for event_id, event in events.follow(runtime.redis, execution.execution_id, timeout_s=300):
        stamps.append((int(event_id.split("-")[0]), event))
        if event["type"] == "final":
            assert event["status"] == "completed", event
    elapsed = time.perf_counter() - started
    if phases is not None:
        first_stage = min(ms for ms, e in stamps if e["type"] == "stage")
        last_stage = max(ms for ms, e in stamps if e["type"] == "stage")
        final = stamps[-1][0]
        phases.append(((first_stage - submitted_ms) / 1000, (final - last_stage) / 1000))
    return elapsed


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    settings = Settings.from_env({}).with_overrides(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'bench.db'}",
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        s3_bucket="orch-bench",
        templates_dir=ROOT / "templates",
        resources_file=ROOT / "resources.yaml",
    )
    s3 = ensure_running(settings.with_overrides(data_dir=ROOT / "var" / "bench-s3"))
    migrations.upgrade(settings)
    os.environ.update(settings.to_env())
    from bench.bench_app import app, noop  # built from the same environment as the workers

    runtime = Runtime(settings, app)
    runtime.redis.flushdb()
    known = coordinator.known_workers(runtime)
    for definition in (linear(STAGES), fanout(10), fanout(200)):
        template_registry.put(runtime.db, parse_template(definition), known)
    fleet = start_fleet(
        settings, app, queues=["coordinator", "echo"], concurrency=2, app_module="bench.bench_app"
    )
    lines = []
    try:
        run_engine(runtime, f"bench_linear_{STAGES}")  # warm up both paths
        chain(*[noop.s() for _ in range(STAGES)]).apply_async().get(timeout=60, interval=0.002)
        phases: list[tuple[float, float]] = []
        engine = [run_engine(runtime, f"bench_linear_{STAGES}", phases) for _ in range(REPEATS)]
        start_ms = median_ms([p[0] for p in phases])
        finish_ms = median_ms([p[1] for p in phases])
        bare = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            chain(*[noop.s() for _ in range(STAGES)]).apply_async().get(timeout=60, interval=0.002)
            bare.append(time.perf_counter() - started)
        engine_ms, bare_ms = median_ms(engine), median_ms(bare)
        lines += [
            f"linear pipeline of {STAGES} no-op stages, median of {REPEATS} runs, "
            f"echo worker prefork c=2, Redis broker:",
            f"  engine      {engine_ms:8.1f} ms total  {engine_ms / STAGES:6.2f} ms/stage "
            f"(includes admission, coordinator start and finish)",
            f"  bare chain  {bare_ms:8.1f} ms total  {bare_ms / STAGES:6.2f} ms/stage",
            f"  ratio       {engine_ms / bare_ms:8.2f}",
            f"  of the engine's time: submit to first stage {start_ms:.1f} ms (DB insert, "
            f"admission, plan), last stage to final event {finish_ms:.1f} ms (persist, release)",
            f"  stages alone: {(engine_ms - start_ms - finish_ms) / STAGES:.2f} ms/stage, ratio "
            f"{(engine_ms - start_ms - finish_ms) / bare_ms:.2f}",
            "",
        ]
        for width in (10, 200):
            engine_f = [run_engine(runtime, f"bench_fanout_{width}") for _ in range(3)]
            plain = []
            for _ in range(3):
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
    finally:
        fleet.stop()
        s3.stop()
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "engine.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
