"""``make bench``: run every ``bench/bench_*.py`` in turn; each writes bench/results/<name>.txt.

Benchmarks measure; tests assert. Nothing here fails on a slow number: it records it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failures = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        print(
            f"== {script.name}: exit {result.returncode} in {time.perf_counter() - started:.1f} s"
        )
        if result.returncode:
            failures.append(script.name)
    for path in sorted((HERE / "results").glob("*.txt")):
        print(f"\n--- {path.relative_to(HERE.parent)}\n{path.read_text().rstrip()}")
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
