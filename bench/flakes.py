"""Run the local suite N times with -n 2 and compare every run's verdicts.

    .venv/bin/python bench/flakes.py [--runs 10] [--load 1] [paths...]

``--load N`` keeps N busy processes (one CPU each, a Python spin loop) running for the whole
time, as a noisy CI machine would: a verdict that changes under load is a product bug.

Prints one line per run (passed/failed counts, chaos verdicts) and whether
all runs agree; exits non-zero on any disagreement or failure. Every run's
reports (timelines, junit.xml, pytest output) are kept under
reports/out/flakes-<stamp>/run-<n>/, so a failed run can be diagnosed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(index: int, keep: Path, paths: list[str]) -> dict[str, str]:
    reports = keep / f"run-{index + 1}"
    reports.mkdir(parents=True)
    junit = reports / "junit.xml"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pytest", *paths, "-q", "-n", "2", "-p", "no:cacheprovider",
                             "--report-dir", str(reports), f"--junitxml={junit}"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    (reports / "pytest.out").write_text(result.stdout + result.stderr)
    verdicts = {}
    for path in reports.glob("*/timelines/*.json"):
        data = json.loads(path.read_text())
        verdicts[f"chaos:{data['scenario']}"] = data["verdict"]
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            failed = any(child.tag in ("failure", "error") for child in case)
            verdicts[f"{case.get('classname')}::{case.get('name')}"] = "failed" if failed else "passed"
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(f"run {index + 1}: exit {result.returncode} in {time.monotonic() - started:.0f} s; {summary}; "
          f"reports in {reports}", flush=True)
    return verdicts


@contextlib.contextmanager
def busy(count: int) -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load", type=int, default=0, help="busy processes beside the runs (one CPU each)")
    parser.add_argument("paths", nargs="*", default=["suites/"], help="what to run (default: suites/)")
    args = parser.parse_args()
    keep = ROOT / "reports" / "out" / time.strftime("flakes-%Y%m%d-%H%M%S")
    started = time.monotonic()
    with busy(args.load):
        runs = [one_run(i, keep, args.paths) for i in range(args.runs)]
    print(f"{args.runs} runs beside {args.load} busy process(es) in {time.monotonic() - started:.0f} s")
    identical = all(run == runs[0] for run in runs)
    failures = sorted({k for run in runs for k, v in run.items() if v != "passed"})
    print(f"{len(runs)} runs, {len(runs[0])} verdicts each; identical: {identical}; failures: {failures or 'none'}")
    return 0 if identical and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
