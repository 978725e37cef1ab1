"""``orchestrator demo`` (what ``make demo`` runs), as a newcomer runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import redis

from orchestrator.settings import Settings
from tests.conftest import ROOT

#: The demo gets a Redis DB of its own: the suite's worker fleet listens on the suite's DB.
DEMO_REDIS_DB = int(os.environ.get("ORCH_TEST_DEMO_REDIS_DB", "14"))


def test_demo_runs_the_market_research_pipeline_and_saves_the_report(
    e2e_settings: Settings, tmp_path: Path
) -> None:
    redis_url = e2e_settings.redis_url.rsplit("/", 1)[0] + f"/{DEMO_REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        ORCH_DATA_DIR=str(tmp_path),  # its own SQLite file, as a fresh clone has
        ORCH_REDIS_URL=redis_url,
        ORCH_S3_BUCKET=e2e_settings.s3_bucket,
        COLUMNS="120",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "demo", "--topic", "electric vehicles"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output[-4000:]
    assert "Traceback" not in output
    assert "feasible" in output
    assert "market_research_pipeline" in output and "completed" in output
    saved = re.findall(r"report saved: (\S+)", output)
    html = next(Path(p) for p in saved if p.endswith(".html"))
    page = html.read_text()
    assert "electric vehicles" in page.lower() and "<svg" in page
    markdown = next(Path(p) for p in saved if p.endswith(".md"))
    assert markdown.read_text().startswith("#")
    # everything the demo started has stopped: no worker of its fleet is left behind
    leftovers = subprocess.run(
        ["pgrep", "-f", f"@fleet-{process.pid} "], capture_output=True, text=True
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout
