"""Measure the audit exporter's throughput: lines per second through classification and counting.

    .venv/bin/python bench/audit.py [--lines 200000]

Replays what the real OpenBao's file audit device wrote (tests/fixtures/audit/openbao-audit.jsonl,
refusals and successes as recorded) through cluster.audit.exporter.AuditMetrics.observe, in one thread,
and through the follower reading them from a file. Prints lines per second for each. The goal is
50,000 lines/s or more. The lag from a denial to its sample in Prometheus needs Prometheus and is not
measured here yet (issue 15).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.audit.exporter import AuditMetrics  # noqa: E402
from cluster.audit.follow import Follower  # noqa: E402

RECORDED = ROOT / "tests" / "fixtures" / "audit" / "openbao-audit.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    options = parser.parse_args()
    recorded = RECORDED.read_bytes().splitlines()
    lines = (recorded * (options.lines // len(recorded) + 1))[:options.lines]
    size = sum(len(line) + 1 for line in lines)

    metrics = AuditMetrics()
    started = time.perf_counter()
    for line in lines:
        metrics.observe(line)
    counted = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "audit.log"
        log.write_bytes(b"\n".join(lines) + b"\n")
        follower, metrics = Follower(log), AuditMetrics()
        started = time.perf_counter()
        read = 0
        while read < len(lines):
            batch = follower.poll()
            for line in batch:
                metrics.observe(line)
            read += len(batch)
        followed = time.perf_counter() - started
        follower.close()

    print(f"audit exporter: {len(lines)} recorded OpenBao audit lines ({size / len(lines):.0f} bytes each on average)")
    print(f"  classify and count:            {len(lines) / counted:,.0f} lines/s")
    print(f"  follow a file, classify, count: {len(lines) / followed:,.0f} lines/s   (goal: 50,000 lines/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
