"""Time how fast a run that cannot start is refused, and print the figures.

    .venv/bin/python bench/refusal.py [--runs N]

Runs ``pytest suites/ --platform kind`` with ``DOCKER_HOST`` pointing at a
socket where no Docker engine answers, N times (default 10), and prints the
wall-clock seconds of each run, the median and the worst, against the goal of
issue 13: the one-line refusal naming ``--platform local`` comes in under 2 s.
The refusal itself (its one line, nothing left behind) is proven by
tests/test_platform_kind.py; this only measures it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 2.0


def one_run(scratch: Path) -> float:
    env = {**os.environ, "DOCKER_HOST": f"unix://{scratch}/no-docker.sock", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--platform", "kind", "-p", "no:cacheprovider",
                             "--report-dir", str(scratch / "reports")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 4:
        sys.exit(f"refusal: expected pytest's usage error (exit 4), got {result.returncode}: "
                 f"{(result.stdout + result.stderr).strip()[-300:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tg-refusal-") as scratch:
        figures = [one_run(Path(scratch)) for _ in range(args.runs)]
    for number, seconds in enumerate(figures, 1):
        print(f"run {number}: refused in {seconds:.2f} s")
    median, worst = statistics.median(figures), max(figures)
    print(f"--platform kind without Docker: median {median:.2f} s, worst {worst:.2f} s "
          f"(goal < {GOAL_S:.0f} s, ratio {median / GOAL_S:.2f}; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
