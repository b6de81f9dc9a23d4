"""python -m reports compare RUN_A RUN_B [--upgrade FILE] | summary RUN

Runs are report directories, or run ids under reports/out (or 'latest').
compare exits 1 on a regression, or on an upgrade (--upgrade, the gate's upgrade.json) whose own verdicts
failed, and 2 when a report is missing or corrupt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.compare import compare_runs, render_table
from reports.run import ReportError, load_run, resolve_run
from reports.summary import write_summary
from reports.upgrade import load_upgrade, render_timeline

REPORTS = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=REPORTS, help="where run ids are looked up")
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="verdict changes and timing regressions from A to B")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--threshold", type=float, default=0.25, help="relative slow-down that counts (0.25)")
    compare.add_argument("--min-delta", type=float, default=1.0, help="and at least this many seconds (1.0)")
    compare.add_argument("--upgrade", type=Path, default=None, metavar="FILE",
                         help="the upgrade between A and B (the gate's upgrade.json): its timeline is shown beside "
                              "the runs, and its own failed verdict fails the comparison")
    summary = commands.add_parser("summary", help="(re)write summary.html and summary.md of a run")
    summary.add_argument("run")
    args = parser.parse_args(argv)
    try:
        if args.command == "summary":
            print(write_summary(resolve_run(args.run, args.reports)))
            return 0
        a = load_run(resolve_run(args.run_a, args.reports))
        b = load_run(resolve_run(args.run_b, args.reports))
        upgrade = load_upgrade(args.upgrade) if args.upgrade else None
    except ReportError as err:
        print(f"reports: {err}", file=sys.stderr)
        return 2
    changes = compare_runs(a, b, threshold=args.threshold, min_delta_s=args.min_delta)
    print(render_table(a, b, changes))
    if upgrade is not None:
        print(render_timeline(a, upgrade, b))
    failed = any(c.regression for c in changes) or bool(upgrade and upgrade.problems)
    print("gate: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
