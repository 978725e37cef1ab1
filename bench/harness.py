"""What every benchmark sets up the same way: private settings on the local services."""

from __future__ import annotations

import tempfile
from pathlib import Path

from orchestrator.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def bench_settings(redis_db: int, prefix: str = "orch-bench-") -> Settings:
    """A throw-away SQLite file, a Redis DB of the benchmark's own, the bench bucket."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    return Settings.from_env({}).with_overrides(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'bench.db'}",
        redis_url=f"redis://127.0.0.1:6379/{redis_db}",
        broker_url=f"redis://127.0.0.1:6379/{redis_db}",
        s3_bucket="orch-bench",
        templates_dir=ROOT / "templates",
        resources_file=ROOT / "resources.yaml",
        worker_modules=("workers", "workers.testing"),  # echo, sleep: the bench's own types
    )


def write_results(name: str, text: str) -> None:
    """Keep a benchmark's report as ``bench/results/<name>`` (what the notes quote)."""
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / name).write_text(text)
