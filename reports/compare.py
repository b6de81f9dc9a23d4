"""Compare two runs: verdict changes and timing regressions, for pre-upgrade certification.

A regression is a test or scenario that passed in A and does not in B, or a
scenario that fails closed or recovers slower in B by more than the
threshold (relative, and at least ``min_delta_s`` so that jitter of a few
hundred milliseconds on a fast scenario is not called a regression).
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.run import RunReport

TIMINGS = (("time_to_fail_closed_s", "time to fail closed"), ("time_to_recover_s", "time to recover"))


@dataclass(frozen=True)
class Change:
    kind: str  # "verdict" or "timing"
    name: str
    before: str
    after: str
    regression: bool
    note: str


def _verdict_changes(kind: str, before: dict[str, str], after: dict[str, str]) -> list[Change]:
    changes = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name, "not run"), after.get(name, "not run")
        if a == b:
            continue
        regression = a == "passed" and b in ("failed", "error")
        note = "regression" if regression else ("fixed" if b == "passed" else "changed")
        changes.append(Change(kind, name, a, b, regression, note))
    return changes


def compare_runs(a: RunReport, b: RunReport, *, threshold: float = 0.25, min_delta_s: float = 1.0) -> list[Change]:
    changes = _verdict_changes("test", {k: v.outcome for k, v in a.tests.items()},
                               {k: v.outcome for k, v in b.tests.items()})
    changes += _verdict_changes("scenario", {k: v.verdict for k, v in a.scenarios.items()},
                                {k: v.verdict for k, v in b.scenarios.items()})
    for scenario_id in sorted(set(a.scenarios) & set(b.scenarios)):
        for field, label in TIMINGS:
            before = getattr(a.scenarios[scenario_id], field)
            after = getattr(b.scenarios[scenario_id], field)
            if before is None or after is None:
                continue
            delta = after - before
            if delta > min_delta_s and after > before * (1 + threshold):
                changes.append(Change("timing", f"{scenario_id}: {label}", f"{before:.2f} s", f"{after:.2f} s",
                                      True, f"regression: +{delta:.2f} s (+{delta / max(before, 1e-9):.0%})"))
    return changes


def render_table(a: RunReport, b: RunReport, changes: list[Change]) -> str:
    header = f"A = {a.run_id} ({a.path})\nB = {b.run_id} ({b.path})"
    if not changes:
        return f"{header}\nno verdict changes and no timing regressions"
    rows = [("kind", "name", "A", "B", "note")] + [(c.kind, c.name, c.before, c.after, c.note) for c in changes]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    regressions = sum(c.regression for c in changes)
    return "\n".join([header, *lines, f"{regressions} regression(s), {len(changes) - regressions} other change(s)"])
