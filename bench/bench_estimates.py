"""How good the estimates are (issue 11): rolling accuracy on real runs, and /estimate latency.

On a warmed stack (real worker processes, the embedded object store, a private SQLite file and
Redis DB) with a local OpenAI-compatible server whose token usage grows with the prompt (so
cost is not zero and varies with depth, shards and topic):

1. 40 runs of ``market_research_pipeline`` (topics, depths and classifier shards varied),
   interleaved with 15 runs of ``bench_naps`` (bench/templates: three parallel sleeps of
   ``seconds``, then a join; ``seconds`` varied). Before each run the models are refitted on
   what came before (rolling); the estimate the submission records is compared with the
   actual time (``estimates.actual_time_ms``: submission to end) and cost
   (``total_cost_usd``). Runs after the 15th are evaluated: time p50 median absolute %
   error, p10-p90 coverage, share within p90, cost median absolute % error; per template,
   with what the error is made of (per stage, overhead, wait before the first stage).
2. ``/estimate`` latency with 10,000 stage rows of history: in-process
   (``estimates.estimate_run``) and through a real ``orchestrator api`` process.

The bench's copy of resources.yaml keeps every price and raises only openai_api's rate and
token quotas, so the limiter does not pace a machine-speed test LLM. Writes
bench/results/estimates.txt, whether or not the targets are met. Run with ``make bench``
(or ``python bench/bench_estimates.py``).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import statistics
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import bench_settings, write_results
from orchestrator import template_registry
from orchestrator.auth import Scope, create_key
from orchestrator.db import PipelineExecution, ResourceUsage, StageExecution
from orchestrator.engine import coordinator, estimates, events
from orchestrator.ops import migrations
from orchestrator.ops.supervisor import (
    deployed_queues,
    start_api,
    start_fleet,
    start_worker,
    wait_ready,
)
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from orchestrator.storage.embedded import EmbeddedS3, ensure_running, write_identities
from tests.workers.openai_server import Answer, OpenAIServer, Received, completion

REDIS_DB = 11
MARKET = "market_research_pipeline"
NAPS = "bench_naps"
MARKET_RUNS = int(os.environ.get("BENCH_ESTIMATES_MARKET_RUNS", "40"))
NAP_RUNS = int(os.environ.get("BENCH_ESTIMATES_NAP_RUNS", "15"))
#: Runs before this many are history only; every later one is evaluated.
WARM = int(os.environ.get("BENCH_ESTIMATES_WARM", "15"))
HISTORY_STAGE_ROWS = 10_000
LATENCY_CALLS = 2000
API_CALLS = 500
RUN_TIMEOUT_S = 300
TOPICS = [
    "electric vehicles",
    "specialty coffee",
    "quantum computing",
    "solid-state batteries",
    "cold brew coffee",
    "EV charging networks",
    "quantum sensors",
    "home espresso machines",
    "battery recycling",
    "post-quantum cryptography",
    "coffee supply chains",
    "electric trucks",
    "plant-based milk",
    "quantum networking",
]
DEPTHS = ["quick", "standard", "comprehensive"]
TARGETS = {"time": 15.0, "coverage": 0.80, "within_p90": 0.90, "cost": 5.0, "p99_ms": 20.0}


# -- the test LLM ------------------------------------------------------------------------------

ASPECTS = [
    "market size",
    "pricing",
    "supply chain",
    "regulation",
    "startups",
    "consumer demand",
    "technology",
    "competition",
    "investment",
    "sustainability",
    "adoption",
    "infrastructure",
    "partnerships",
    "forecasts",
]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2}


def _expand(prompt: str) -> str:
    """topic_researcher.expand: subtopics, keywords and queries, as many as asked for."""
    match = re.search(r"research topic (['\"])(.*?)\1 for a (\w+) market scan", prompt)
    topic = match.group(2) if match else "the topic"
    counts = [int(n) for n in re.findall(r"\[(\d+) ", prompt)]
    n_sub, n_kw, n_q = [*counts, 5, 12, 8][:3]
    aspects = [ASPECTS[i % len(ASPECTS)] for i in range(max(n_sub, n_kw, n_q))]
    keywords = sorted(_words(topic)) + [a for a in aspects if a not in topic]
    return json.dumps(
        {
            "subtopics": [f"{topic} {a}" for a in aspects[:n_sub]],
            "keywords": keywords[:n_kw],
            "queries": [f"{topic} {a} news 2025" for a in aspects[:n_q]],
        }
    )


def _rate(prompt: str) -> str:
    """content_classifier.classify: relevance by shared words with the topic, a subtopic."""
    topic = re.search(r"^Topic: (.*)$", prompt, re.MULTILINE)
    subtopics_line = re.search(r"^Subtopics: (.*)$", prompt, re.MULTILINE)
    wanted = _words(topic.group(1)) if topic else set()
    subtopics = [s.strip() for s in subtopics_line.group(1).split(",")] if subtopics_line else []
    results = []
    for n, text in re.findall(r"^\[(\d+)\] (.*)$", prompt, re.MULTILINE):
        seen = _words(text)
        shared = len(wanted & seen)
        relevance = round(min(0.95, 0.08 + 0.35 * shared), 2)
        subtopic = next((s for s in subtopics if _words(s) - wanted & seen), None)
        results.append({"index": int(n), "relevance": relevance, "subtopic": subtopic})
    return json.dumps({"results": results})


def _answer(prompt: str) -> str:
    """universal_researcher.research: a paragraph and findings citing the excerpts."""
    limit = re.search(r"at most (\d+) findings", prompt)
    count = int(limit.group(1)) if limit else 3
    excerpts = re.findall(r"^\[(\d+)\] \((.*?)\) (.*)$", prompt, re.MULTILINE)
    findings = [
        {"text": text.split(". ")[0][:160].rstrip(".") + ".", "excerpt": int(n)}
        for n, _source, text in excerpts[:count]
    ]
    sources = sorted({source for _, source, _ in excerpts})
    answer = (
        f"Across {len(excerpts)} excerpts from {len(sources)} sources, the main developments "
        f"are: " + " ".join(f["text"] for f in findings[:3])
    )
    return json.dumps({"answer": answer, "findings": findings})


def respond(received: Received) -> str:
    prompt = received.prompt
    if "Expand the research topic" in prompt:
        return _expand(prompt)
    if "Articles:" in prompt:
        return _rate(prompt)
    if "Excerpts:" in prompt:
        return _answer(prompt)
    return json.dumps({"answer": "unrecognised prompt"})


class MeteredLLM(OpenAIServer):
    """The tests' server, with usage that grows with the prompt and the reply (about four
    characters a token) and a latency that grows with the reply, as a provider's does."""

    def __init__(self) -> None:
        super().__init__()
        self.responder = respond
        self.tokens = 0

    def _answer(self, received: Received) -> Answer:
        content = respond(received)
        prompt_tokens = math.ceil(len(received.prompt) / 4)
        completion_tokens = math.ceil(len(content) / 4)
        with self._lock:
            self.requests.append(received)
            self.tokens += prompt_tokens + completion_tokens
        body = completion(content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        return Answer(200, body, delay=0.02 + 0.0002 * completion_tokens)


# -- the stack ---------------------------------------------------------------------------------


def bench_resources(directory: Path) -> Path:
    """resources.yaml with its prices, but openai_api's rate and token quotas out of the way."""
    pool = yaml.safe_load((ROOT / "resources.yaml").read_text())
    llm = pool["resources"]["openai_api"]
    llm.update(rate_limit_per_minute=100_000, daily_limit=100_000_000, monthly_limit=10**10)
    path = directory / "resources.yaml"
    path.write_text(yaml.safe_dump(pool, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_store(settings: Settings) -> tuple[Settings, EmbeddedS3, str]:
    """An embedded object store of the bench's own, every port private: one shared on the
    default endpoint goes away when whoever started it stops (and with it, this bench's
    report stages). Falls back to the shared endpoint if this one cannot start."""
    import subprocess

    directory = (settings.data_dir / "s3").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("s3", "master", "filer", "volume")}
    private = settings.with_overrides(s3_endpoint=f"127.0.0.1:{ports['s3']}", s3_embedded=False)
    config = write_identities(
        directory, settings.s3_access_key, settings.s3_secret_key.get_secret_value()
    )
    weed = Path(sys.executable).with_name("weed")
    arguments = [
        str(weed),
        "mini",
        f"-dir={directory}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    for name, port in ports.items():
        arguments += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
    process = subprocess.Popen(
        arguments,
        stdout=(directory / "weed.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    store = EmbeddedS3(process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", ports["s3"]), timeout=0.5):
                return private, store, f"private (127.0.0.1:{ports['s3']})"
        except OSError:
            time.sleep(0.2)
    store.stop()
    shared = ensure_running(settings.with_overrides(data_dir=ROOT / "var" / "bench-s3"))
    return settings, shared, f"shared {settings.s3_endpoint} (the private one did not start)"


def schedule(seed: int = 11) -> list[tuple[str, dict[str, Any]]]:
    """The runs in order: market research with each (topic, depth) at most once (its research
    stage is cached per topic and depth), bench_naps spread evenly among them."""
    rng = random.Random(seed)
    pairs = [(t, d) for t in TOPICS for d in DEPTHS]
    rng.shuffle(pairs)
    market = [
        (MARKET, {"topic": t, "depth": d, "shards": rng.randint(1, 4)})
        for t, d in pairs[:MARKET_RUNS]
    ]
    naps = [(NAPS, {"seconds": round(rng.uniform(0.05, 0.6), 2)}) for _ in range(NAP_RUNS)]
    total = len(market) + len(naps)
    slots = {round((k + 0.5) * total / max(1, len(naps))) for k in range(len(naps))}
    order: list[tuple[str, dict[str, Any]]] = []
    for index in range(total):
        order.append(naps.pop() if (index in slots and naps) or not market else market.pop(0))
    return order


def wait_for(runtime: Runtime, execution_id: str) -> tuple[PipelineExecution, list[Any]]:
    """Follow the run's events to its final one; return its row (stages loaded) and stamps."""
    stamps = []
    for entry_id, event in events.follow(runtime.redis, execution_id, timeout_s=RUN_TIMEOUT_S):
        stamps.append((int(entry_id.split("-")[0]), event))
    with runtime.db.session() as session:
        row = session.get(PipelineExecution, execution_id)
        assert row is not None
        _ = list(row.stages)
        session.expunge_all()
    return row, stamps


def tokens_by_stage(runtime: Runtime, execution_id: str) -> dict[str, float]:
    from sqlalchemy import select

    with runtime.db.session() as session:
        rows = session.execute(
            select(ResourceUsage.stage_id, ResourceUsage.quantity_used).where(
                ResourceUsage.execution_id == execution_id,
                ResourceUsage.resource_name == "openai_api",
            )
        ).all()
    used: dict[str, float] = defaultdict(float)
    for stage_id, quantity in rows:
        used[str(stage_id).split(".", 1)[-1]] += float(quantity)
    return used


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def critical_path(deps: dict[str, list[str]], times: dict[str, float]) -> float:
    finish: dict[str, float] = {}

    def done(stage: str) -> float:
        if stage not in finish:
            before = [done(d) for d in deps.get(stage, []) if d in deps]
            finish[stage] = times.get(stage, 0.0) + max(before, default=0.0)
        return finish[stage]

    return max((done(s) for s in deps), default=0.0)


def one_run(
    runtime: Runtime, template: str, parameters: dict[str, Any], price: float
) -> dict[str, Any]:
    """Refit on what came before, submit, follow to the end; what was said and what was."""
    started = time.perf_counter()
    estimates.refit(runtime)
    refit_ms = (time.perf_counter() - started) * 1000
    _template, stages = template_registry.prepare(runtime, template, parameters)
    detail = estimates.cost_and_time(runtime, stages)  # the same fit the submission reads
    medians = stage_medians(runtime, stages)
    submitted = time.time() * 1000
    execution, _ = coordinator.submit(runtime, template, parameters, client_id="bench")
    row, stamps = wait_for(runtime, execution.execution_id)
    stated = row.estimate or {}
    actual = estimates.actual_time_ms(row) or 0.0
    stage_rows = {s.stage_name: s for s in row.stages}
    deps = {s.stage_name: list((s.features or {}).get("_deps", [])) for s in row.stages}
    times = {s.stage_name: float(s.time_ms or 0) for s in row.stages}
    path = critical_path(deps, times)
    created = _aware(row.created_at)
    first_stage = min(
        (_aware(s.started_at) for s in row.stages if s.started_at is not None), default=None
    )
    stage_events = [ms for ms, e in stamps if e.get("type") == "stage"]
    tokens = tokens_by_stage(runtime, row.execution_id)
    breakdown = {s.stage: s for s in detail.breakdown}
    per_stage = {}
    for name, stage in stage_rows.items():
        said = (stated.get("stages") or {}).get(name) or {}
        per_stage[name] = {
            "action": f"{stage.worker_name}.{stage.action}",
            "actual_ms": stage.time_ms,
            "p10": said.get("p10"),
            "p50": said.get("p50"),
            "p90": said.get("p90"),
            "cache_hit": bool(stage.cache_hit),
            "method": (stage.summary_data or {}).get("method"),
            "cost": float(stage.cost_usd or 0.0),
            "est_cost": breakdown[name].cost_usd if name in breakdown else None,
            "tokens": tokens.get(name, 0.0),
            "est_tokens": (breakdown[name].cost_usd / price) if name in breakdown else None,
            "est_tokens_p50": medians[name][1] if name in medians else None,
            "source": breakdown[name].source if name in breakdown else None,
        }
    return {
        "template": template,
        "parameters": parameters,
        "execution_id": row.execution_id,
        "status": row.status,
        "refit_ms": refit_ms,
        "time": stated.get("time_ms") or {},
        "cost": stated.get("cost_usd") or {},
        "recorded_matches": stated.get("time_ms") == detail.time.as_dict(),
        "est_overhead_ms": detail.overhead_ms,
        "actual_ms": actual,
        "actual_cost": float(row.total_cost_usd or 0.0),
        "path_ms": path,
        "overhead_ms": actual - path,
        "to_first_stage_ms": (first_stage - created).total_seconds() * 1000
        if first_stage and created
        else None,
        "submit_to_first_event_ms": (min(stage_events) - submitted) if stage_events else None,
        "stages": per_stage,
        "tokens": sum(tokens.values()),
        "alt_time_ms": critical_path(deps, {n: m[0] for n, m in medians.items()})
        + detail.overhead_ms,
        "alt_cost": price * sum(m[1] or 0.0 for m in medians.values()),
    }


def stage_medians(runtime: Runtime, stages: list[Any]) -> dict[str, tuple[float, float | None]]:
    """Each stage's p50 time and p50 tokens, from the fit an estimate reads (items flowing in
    taken at their p50, as the estimator does): for telling where an error comes from."""
    import graphlib

    from orchestrator.core.estimator import ActionModels, stage_features

    known = estimates.knowledge(runtime)
    by_id = {s.id: s for s in stages}
    order = graphlib.TopologicalSorter({s.id: s.depends_on for s in stages}).static_order()
    items: dict[str, float | None] = {}
    out: dict[str, tuple[float, float | None]] = {}
    for stage in (by_id[i] for i in order if i in by_id):
        models = known.actions.get((stage.worker, stage.action), ActionModels())
        upstream = [items.get(d) for d in stage.depends_on]
        in_items = sum(i for i in upstream if i is not None) if any(upstream) else None
        features = stage_features(stage, runtime.unusable, in_items)
        items[stage.id] = models.items.quantiles(features).p50 if models.items else None
        time_p50 = (
            models.time.quantiles(features).p50 if models.time else float(stage.estimate.time_ms)
        )
        units = models.units.get("openai_api")
        out[stage.id] = (time_p50, units.quantiles(features).p50 if units else None)
    return out


# -- figures -----------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _pct_error(actual: float, said: float) -> float:
    if actual == said:
        return 0.0
    return 100 * abs(actual - said) / max(abs(actual), 1e-12)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["status"] == "completed" and r["time"]]
    time_err = [_pct_error(r["actual_ms"], r["time"]["p50"]) for r in ok]
    signed = [100 * (r["time"]["p50"] - r["actual_ms"]) / r["actual_ms"] for r in ok]
    inside = [r["time"]["p10"] <= r["actual_ms"] <= r["time"]["p90"] for r in ok]
    under = [r["actual_ms"] <= r["time"]["p90"] for r in ok]
    cost_err = [_pct_error(r["actual_cost"], r["cost"].get("expected", 0.0)) for r in ok]
    cost_signed = [
        100 * (r["cost"].get("expected", 0.0) - r["actual_cost"]) / r["actual_cost"]
        for r in ok
        if r["actual_cost"]
    ]
    return {
        "runs": len(ok),
        "failed": len(runs) - len(ok),
        "time_mape": _median(time_err),
        "time_bias": _median(signed),
        "coverage": sum(inside) / len(inside) if inside else None,
        "within_p90": sum(under) / len(under) if under else None,
        "below_p10": sum(r["actual_ms"] < r["time"]["p10"] for r in ok) / len(ok) if ok else None,
        "cost_mape": _median(cost_err),
        "cost_bias": _median(cost_signed),
        "alt_time_mape": _median([_pct_error(r["actual_ms"], r["alt_time_ms"]) for r in ok]),
        "alt_cost_mape": _median([_pct_error(r["actual_cost"], r["alt_cost"]) for r in ok]),
        "cost_p90_ok": sum(r["actual_cost"] <= r["cost"].get("p90", 0.0) for r in ok) / len(ok)
        if ok
        else None,
    }


def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def accuracy_lines(runs: list[dict[str, Any]], title: str) -> list[str]:
    s = summarise(runs)

    def pct(share: float | None) -> str:
        return fmt(None if share is None else 100 * share, ".0f", "%")

    def check(value: float | None, target: float, at_most: bool) -> str:
        if value is None:
            return "n/a"
        return verdict(value <= target if at_most else value >= target)

    return [
        f"  {title}: {s['runs']} runs evaluated ({s['failed']} did not complete)",
        f"    time p50 median abs error {fmt(s['time_mape'], '.1f', '%'):>8}  (target <= 15%: "
        f"{check(s['time_mape'], TARGETS['time'], True)}); median signed error "
        f"{fmt(s['time_bias'], '+.1f', '%')} (+ = estimate too long)",
        f"    inside p10-p90            {pct(s['coverage']):>8}  (target >= 80%: "
        f"{check(s['coverage'], TARGETS['coverage'], False)}); below p10 {pct(s['below_p10'])}",
        f"    actual <= p90             {pct(s['within_p90']):>8}  (target >= 90%: "
        f"{check(s['within_p90'], TARGETS['within_p90'], False)})",
        f"    cost median abs error     {fmt(s['cost_mape'], '.1f', '%'):>8}  (target <= 5%: "
        f"{check(s['cost_mape'], TARGETS['cost'], True)}); median signed "
        f"{fmt(s['cost_bias'], '+.1f', '%')}; actual <= cost p90 in {pct(s['cost_p90_ok'])}",
        f"    what-if (diagnosis, not the product's figures): time = critical path of the stage "
        f"p50s + estimated overhead: error {fmt(s['alt_time_mape'], '.1f', '%')}; cost = stage "
        f"token p50s x price: error {fmt(s['alt_cost_mape'], '.1f', '%')}",
    ]


def stage_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Per template stage (shards pooled): error, bias, coverage, share of the critical path."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for name, stage in run["stages"].items():
            if stage["actual_ms"] is None or stage["p50"] is None:
                continue
            grouped[(run["template"], re.sub(r"-\d+$", "", name))].append(stage)
    lines = [
        "  per stage (shards pooled; p50 abs error and signed median, p10-p90 coverage, median "
        "ms estimated/actual; tokens: the mean the cost uses and the p50, vs actual):"
    ]
    for (template, name), rows in sorted(grouped.items()):
        live = [r for r in rows if not r["cache_hit"]]
        use = live or rows
        err = _median([_pct_error(r["actual_ms"], r["p50"]) for r in use if r["actual_ms"]])
        bias = _median(
            [100 * (r["p50"] - r["actual_ms"]) / r["actual_ms"] for r in use if r["actual_ms"]]
        )
        cover = sum(r["p10"] <= r["actual_ms"] <= r["p90"] for r in use) / len(use)
        tokens = [r["tokens"] for r in use]
        est_tokens = [r["est_tokens"] for r in use if r["est_tokens"] is not None]
        est_p50 = [r["est_tokens_p50"] or 0.0 for r in use]
        token_err = _median(
            [_pct_error(r["tokens"], r["est_tokens"] or 0.0) for r in use if r["tokens"]]
        )
        token_part = (
            f", tokens mean {_median(est_tokens):9.0f} p50 {_median(est_p50):6.0f} / actual "
            f"{_median(tokens):6.0f} (err of mean {fmt(token_err, '.0f', '%')})"
            if any(tokens) or any(est_tokens)
            else ""
        )
        methods = sorted({str(r["method"]) for r in use if r["method"]})
        cached = f", {len(rows) - len(live)} cache hits" if len(rows) != len(live) else ""
        said_ms = _median([r["p50"] for r in use]) or 0.0
        actual_ms = _median([r["actual_ms"] for r in use]) or 0.0
        lines.append(
            f"    {template}.{name:<9} n={len(use):3d}  err {fmt(err, '5.1f', '%')}  "
            f"bias {fmt(bias, '+6.1f', '%')}  cover {100 * cover:3.0f}%  "
            f"ms {said_ms:6.0f}/{actual_ms:6.0f}"
            f"{token_part}{' ' + '/'.join(methods) if methods else ''}{cached}"
        )
    return lines


def decomposition_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Where the run's time goes: stages on the critical path vs what the engine adds."""
    lines = ["  where the time goes (medians; overhead = actual - critical path of stage times):"]
    by_template: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_template[run["template"]].append(run)
    for template, rows in sorted(by_template.items()):
        actual = _median([r["actual_ms"] for r in rows])
        path = _median([r["path_ms"] for r in rows])
        overhead = _median([r["overhead_ms"] for r in rows])
        est_overhead = _median([r["est_overhead_ms"] for r in rows])
        first = _median([r["to_first_stage_ms"] for r in rows if r["to_first_stage_ms"]])
        over_err = _median(
            [abs(r["overhead_ms"] - r["est_overhead_ms"]) / r["actual_ms"] * 100 for r in rows]
        )
        lines.append(
            f"    {template:<25} actual {fmt(actual, '7.0f')} ms = stages on the critical path "
            f"{fmt(path, '7.0f')} + engine/queue {fmt(overhead, '5.0f')} (estimated "
            f"{fmt(est_overhead, '5.0f')}; its error alone is {fmt(over_err, '.1f')}% of the "
            f"run); submit -> first stage start {fmt(first, '.0f')} ms"
        )
    return lines


def breakdown_lines(runs: list[dict[str, Any]]) -> list[str]:
    """Signed errors (+ = estimate too high) by the parameters that drive them, and how far
    the Monte Carlo p50 sits above the critical path of the stage p50s plus the overhead."""
    lines = ["  signed median errors by parameter (+ = estimate too high; n runs):"]

    def signed(rows: list[dict[str, Any]], key: str) -> str:
        if key == "time":
            values = [100 * (r["time"]["p50"] - r["actual_ms"]) / r["actual_ms"] for r in rows]
        elif key == "cost":
            values = [
                100 * (r["cost"]["expected"] - r["actual_cost"]) / r["actual_cost"]
                for r in rows
                if r["actual_cost"]
            ]
        else:
            values = [100 * (r["alt_cost"] - r["actual_cost"]) / r["actual_cost"] for r in rows]
        return fmt(_median(values), "+.0f", "%")

    market = [r for r in runs if r["template"] == MARKET]
    for name in ("shards", "depth"):
        groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for r in market:
            groups[r["parameters"][name]].append(r)
        parts = [
            f"{value}: time {signed(rows, 'time')}, cost {signed(rows, 'cost')} (p50 tokens "
            f"{signed(rows, 'alt')}), n={len(rows)}"
            for value, rows in sorted(groups.items(), key=lambda kv: str(kv[0]))
        ]
        lines.append(f"    {MARKET} by {name}: " + "; ".join(parts))
    naps = sorted(
        (r for r in runs if r["template"] == NAPS), key=lambda r: r["parameters"]["seconds"]
    )
    parts = []
    for r in naps:
        stage = r["stages"].get("nap_a", {})
        parts.append(
            f"{r['parameters']['seconds']:.2f}s: run {signed([r], 'time')}, nap "
            f"{stage.get('p50', 0):.0f}/{stage.get('actual_ms') or 0:.0f} ms"
        )
    if parts:
        lines.append(f"    {NAPS} by seconds (nap_a p50/actual): " + "; ".join(parts))
    for template in (MARKET, NAPS):
        rows = [r for r in runs if r["template"] == template]
        ratio = _median([r["time"]["p50"] / r["alt_time_ms"] for r in rows if r["alt_time_ms"]])
        lines.append(
            f"    {template}: Monte Carlo p50 / (critical path of stage p50s + overhead) = "
            f"{fmt(ratio, '.2f')} (median)"
        )
    return lines


def run_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "  every run (# > warm-up is evaluated): p10/p50/p90 and actual ms, cost expected/actual"
    ]
    for index, r in enumerate(runs, 1):
        t = r["time"] or {"p10": 0, "p50": 0, "p90": 0}
        params = ",".join(f"{v}" for v in r["parameters"].values())
        mark = "*" if index > WARM else " "
        flag = "" if t["p10"] <= r["actual_ms"] <= t["p90"] else "  outside"
        lines.append(
            f"  {mark}{index:3d} {r['template'][:6]} {params[:38]:<38} "
            f"{t['p10']:6.0f} {t['p50']:6.0f} {t['p90']:6.0f} | {r['actual_ms']:6.0f} ms  "
            f"${r['cost'].get('expected', 0):.6f}/${r['actual_cost']:.6f}  "
            f"refit {r['refit_ms']:4.0f} ms{flag}"
        )
    return lines


# -- /estimate latency with 10,000 stage rows ----------------------------------------------------


def seed_history(runtime: Runtime, runs: list[dict[str, Any]], wanted_rows: int) -> int:
    """Clone the bench's finished runs (stages, features, ledger), older and jittered, in
    bulk until the database holds ``wanted_rows`` finished stage rows."""
    from sqlalchemy import func, insert, select

    rng = random.Random(3)
    with runtime.db.session() as session:
        have = session.scalar(select(func.count()).select_from(StageExecution)) or 0
        models = [
            session.get(PipelineExecution, r["execution_id"])
            for r in runs
            if r["status"] == "completed"
        ]
        sources = []
        for m in models:
            usage = session.scalars(
                select(ResourceUsage).where(ResourceUsage.execution_id == m.execution_id)
            ).all()
            sources.append(
                (
                    {c.name: getattr(m, c.name) for c in PipelineExecution.__table__.columns},
                    [
                        {c.name: getattr(s, c.name) for c in StageExecution.__table__.columns}
                        for s in m.stages
                    ],
                    [
                        {c.name: getattr(u, c.name) for c in ResourceUsage.__table__.columns}
                        for u in usage
                    ],
                )
            )
    executions, stage_rows, usage_rows = [], [], []
    base = datetime.now(UTC) - timedelta(days=70)  # outside today's and this month's windows
    n = 0
    while have + len(stage_rows) < wanted_rows:
        run, stages, usage = sources[n % len(sources)]
        n += 1
        new_id = f"exec_hist{uuid.uuid4().hex[:16]}"
        created = base + timedelta(seconds=30 * n)
        factor = rng.uniform(0.85, 1.2)
        total = (estimates.actual_time_ms(RowView(run)) or 1000.0) * factor
        executions.append(
            {
                **run,
                "execution_id": new_id,
                "request_id": None,
                "created_at": created,
                "updated_at": created,
                "started_at": created + timedelta(milliseconds=40),
                "completed_at": created + timedelta(milliseconds=total),
            }
        )
        for stage in stages:
            stage_id = f"{new_id}.{stage['stage_name']}"
            time_ms = int((stage["time_ms"] or 0) * factor)
            stage_rows.append(
                {
                    **stage,
                    "stage_id": stage_id,
                    "execution_id": new_id,
                    "time_ms": time_ms,
                    "started_at": created,
                    "completed_at": created + timedelta(milliseconds=total),
                }
            )
        for entry in usage:
            stage_name = str(entry["stage_id"]).split(".", 1)[-1]
            usage_rows.append(
                {
                    **entry,
                    "usage_id": uuid.uuid4().hex,
                    "execution_id": new_id,
                    "stage_id": f"{new_id}.{stage_name}",
                    "idempotency_key": None,
                    "timestamp": created,
                    "quantity_used": entry["quantity_used"] * factor,
                }
            )
    with runtime.db.session() as session:
        session.execute(insert(PipelineExecution), executions)
        session.execute(insert(StageExecution), stage_rows)
        if usage_rows:
            session.execute(insert(ResourceUsage), usage_rows)
    with runtime.db.session() as session:
        return session.scalar(select(func.count()).select_from(StageExecution)) or 0


class RowView:  # a stand-in with the two attributes actual_time_ms reads
    def __init__(self, data: dict[str, Any]) -> None:
        self.created_at, self.completed_at = data["created_at"], data["completed_at"]


def latency_requests(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            MARKET,
            {"topic": rng.choice(TOPICS), "depth": rng.choice(DEPTHS), "shards": rng.randint(1, 4)},
        )
        if rng.random() < 0.75
        else (NAPS, {"seconds": round(rng.uniform(0.05, 0.6), 2)})
        for _ in range(LATENCY_CALLS)
    ]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def measure_latency(runtime: Runtime, settings: Settings) -> list[str]:
    import httpx

    rng = random.Random(5)
    requests = latency_requests(rng)
    for template, parameters in requests[:20]:  # warm the caches (the fit, the templates)
        estimates.estimate_run(runtime, template, parameters)
    samples = []
    for template, parameters in requests:
        started = time.perf_counter()
        estimates.estimate_run(runtime, template, parameters)
        samples.append((time.perf_counter() - started) * 1000)
    lines = [
        f"  in-process estimates.estimate_run, {len(samples)} calls (75% {MARKET} with varied "
        f"params, 25% {NAPS}): p50 {percentile(samples, 0.5):.2f} ms, p99 "
        f"{percentile(samples, 0.99):.2f} ms, max {max(samples):.1f} ms  (target p99 <= "
        f"{TARGETS['p99_ms']:.0f} ms: {verdict(percentile(samples, 0.99) <= TARGETS['p99_ms'])})"
    ]
    api = None
    try:
        port = free_port()
        api = start_api(settings, port)
        key = create_key(runtime.db, Scope.CLIENT, client_id="bench", label="bench estimates")
        http_samples = []
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as client:
            for template, parameters in requests[:30]:
                client.post("/estimate", json={"template_name": template, "parameters": parameters})
            statuses = set()
            for template, parameters in requests[:API_CALLS]:
                started = time.perf_counter()
                response = client.post(
                    "/estimate", json={"template_name": template, "parameters": parameters}
                )
                http_samples.append((time.perf_counter() - started) * 1000)
                statuses.add(response.status_code)
        lines.append(
            f"  POST /estimate on a real `orchestrator api` process (keep-alive client on the "
            f"same host), {len(http_samples)} calls: p50 {percentile(http_samples, 0.5):.2f} ms, "
            f"p99 {percentile(http_samples, 0.99):.2f} ms, max {max(http_samples):.1f} ms; "
            f"statuses {sorted(statuses)}  (target p99 <= {TARGETS['p99_ms']:.0f} ms: "
            f"{verdict(percentile(http_samples, 0.99) <= TARGETS['p99_ms'])})"
        )
    except Exception as error:  # measured, reported, never fatal
        lines.append(f"  POST /estimate through the API: not measured ({error})")
    finally:
        if api is not None:
            import signal

            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=20)
    return lines


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    began = time.perf_counter()
    llm = MeteredLLM()
    llm.start()
    base = bench_settings(REDIS_DB, "orch-bench-estimates-")
    settings, s3, store_note = private_store(
        base.with_overrides(
            llm_base_url=llm.base_url,
            llm_api_key=SecretStr("bench"),
            resources_file=bench_resources(base.data_dir),
            # the test worker types (``sleep`` for bench_naps) are loaded only where named
            worker_modules=(*base.worker_modules, "workers.testing"),
        )
    )
    fleet = None
    runs: list[dict[str, Any]] = []
    lines: list[str] = []
    try:
        migrations.upgrade(settings)
        os.environ.update(settings.to_env())
        runtime = Runtime(settings)
        runtime.redis.flushdb()
        template_registry.sync_templates(runtime)
        template_registry.sync_directory(
            runtime.db, ROOT / "bench" / "templates", template_registry.known_workers(runtime)
        )
        assert "openai_api" not in runtime.unusable, "the LLM must be configured"
        price = runtime.pool.prices()["openai_api"]
        fleet = start_fleet(
            settings, runtime.celery, queues=deployed_queues(runtime.registry), concurrency=2
        )
        start_worker(fleet, settings, "sleep", concurrency=3)
        wait_ready(runtime.celery, fleet)
        fleet_s = time.perf_counter() - began
        # Warm-up (imports, the corpus, connections): one run of each, then forgotten, so
        # that a cold first run is not history.
        for template, parameters in (
            (MARKET, {"topic": "warm-up topic", "depth": "quick", "shards": 2}),
            (NAPS, {"seconds": 0.1}),
        ):
            execution, _ = coordinator.submit(runtime, template, parameters, client_id="bench")
            wait_for(runtime, execution.execution_id)
        forget_everything(runtime)
        planned = schedule()
        for index, (template, parameters) in enumerate(planned, 1):
            run = one_run(runtime, template, parameters, price)
            runs.append(run)
            t = run["time"]
            print(
                f"{index:3d}/{len(planned)} {template} {parameters}: {run['status']} "
                f"{run['actual_ms']:.0f} ms (said {t.get('p10', 0):.0f}/{t.get('p50', 0):.0f}/"
                f"{t.get('p90', 0):.0f}), ${run['actual_cost']:.6f} (said "
                f"${run['cost'].get('expected', 0):.6f})",
                flush=True,
            )
        runs_s = time.perf_counter() - began - fleet_s
        (settings.data_dir / "runs.json").write_text(json.dumps(runs, indent=1, default=str))
        evaluated = runs[WARM:]
        report = estimates.accuracy(runtime, last=len(evaluated))
        lines += header(settings, llm, fleet_s, runs_s, len(runs), price, store_note)
        lines.append(
            f"rolling accuracy, runs {WARM + 1}..{len(runs)} (fit on what came before each):"
        )
        lines += accuracy_lines(evaluated, "all templates")
        for template in (MARKET, NAPS):
            lines += accuracy_lines([r for r in evaluated if r["template"] == template], template)
        lines += decomposition_lines([r for r in evaluated if r["status"] == "completed"])
        lines += stage_lines([r for r in evaluated if r["status"] == "completed"])
        lines += breakdown_lines([r for r in evaluated if r["status"] == "completed"])
        lines.append(
            f"  estimates.accuracy(last={len(evaluated)}) says: time error "
            f"{report['time_median_abs_pct_error']}%, cost error "
            f"{report['cost_median_abs_pct_error']}%, coverage {report['interval_coverage']}, "
            f"within p90 {report['within_p90']} ({report['runs']} runs)"
        )
        mismatched = sum(not r["recorded_matches"] for r in runs)
        lines.append(
            f"  the recorded estimate differed from the bench's own cost_and_time on the same "
            f"fit in {mismatched} of {len(runs)} runs (a refit by the coordinator in between)"
        )
        lines.append("")
        lines += run_table(runs)
        lines.append("")
        started = time.perf_counter()
        rows = seed_history(runtime, runs, HISTORY_STAGE_ROWS)
        seed_s = time.perf_counter() - started
        started = time.perf_counter()
        estimates.refit(runtime)
        refit_ms = (time.perf_counter() - started) * 1000
        lines.append(
            f"/estimate latency with {rows} stage rows of history (bench runs cloned, older, "
            f"jittered; inserted in {seed_s:.1f} s), one refit on them: {refit_ms:.0f} ms"
        )
        lines += measure_latency(runtime, settings)
    finally:
        if fleet is not None:
            fleet.stop()
        s3.stop()
        llm.stop()
    lines.append(f"\nwhole bench: {time.perf_counter() - began:.0f} s")
    text = "\n".join(lines) + "\n"
    write_results("estimates.txt", text)
    print(text)


def forget_everything(runtime: Runtime) -> None:
    """Drop the warm-up runs from the history and the fit (their cache entries stay)."""
    from sqlalchemy import delete

    with runtime.db.session() as session:
        session.execute(delete(ResourceUsage))
        session.execute(delete(StageExecution))
        session.execute(delete(PipelineExecution))
    runtime.redis.delete(estimates.KNOWLEDGE_KEY, estimates.VERSION_KEY, estimates.REFIT_LOCK)
    estimates._cache.clear()


def header(
    settings: Settings,
    llm: MeteredLLM,
    fleet_s: float,
    runs_s: float,
    runs: int,
    price: float,
    store: str,
) -> list[str]:
    load1, load5, _ = os.getloadavg()
    return [
        f"estimates benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average "
        f"{load1:.1f} (5 min {load5:.1f}) on {os.cpu_count()} cores",
        f"stack: one worker process per deployed worker type (prefork c=2; coordinator c=2), "
        f"sleep c=3, Redis DB {REDIS_DB}, SQLite, embedded S3 {store}; started in {fleet_s:.0f} s",
        f"test LLM at {settings.llm_base_url}: usage = ceil(chars/4) of prompt + reply, "
        f"latency 20 ms + 0.2 ms per reply token; {len(llm.requests)} calls, {llm.tokens} "
        f"tokens; openai_api priced at ${price:g}/token (resources.yaml; rate and token "
        f"quotas raised for the bench)",
        f"{runs} runs in {runs_s:.0f} s; targets: time p50 error <= 15%, p10-p90 covers >= 80%, "
        f"actual <= p90 >= 90%, cost error <= 5%, /estimate p99 <= 20 ms",
        "",
    ]


if __name__ == "__main__":
    main()
