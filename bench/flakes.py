"""Run the local suite N times with -n 2 and compare every run's verdicts.

    .venv/bin/python bench/flakes.py [--runs 10]

Prints one line per run (passed/failed counts, chaos verdicts) and whether
all runs agree; exits non-zero on any disagreement or failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(index: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="tg-flakes-") as reports:
        junit = Path(reports) / "junit.xml"
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "-q", "-n", "2", "-p", "no:cacheprovider",
                                 "--report-dir", reports, f"--junitxml={junit}"], cwd=ROOT, capture_output=True,
                                text=True, check=False)
        verdicts = {}
        for path in Path(reports).glob("*/timelines/*.json"):
            data = json.loads(path.read_text())
            verdicts[f"chaos:{data['scenario']}"] = data["verdict"]
        import xml.etree.ElementTree as ET

        for case in ET.parse(junit).getroot().iter("testcase"):
            failed = any(child.tag in ("failure", "error") for child in case)
            verdicts[f"{case.get('classname')}::{case.get('name')}"] = "failed" if failed else "passed"
        summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        print(f"run {index + 1}: exit {result.returncode} in {time.monotonic() - started:.0f} s; {summary}",
              flush=True)
        return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    runs = [one_run(i) for i in range(args.runs)]
    identical = all(run == runs[0] for run in runs)
    failures = sorted({k for run in runs for k, v in run.items() if v != "passed"})
    print(f"{len(runs)} runs, {len(runs[0])} verdicts each; identical: {identical}; failures: {failures or 'none'}")
    return 0 if identical and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
