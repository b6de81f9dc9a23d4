"""summary.html (one page, offline) and summary.md (for CI logs) of one run.

The page shows the verdict per test and per scenario, each scenario's
time-to-fail-closed and time-to-recover against its bounds, the timeline
plots and the versions. Everything is inline: no script, no stylesheet or
font from anywhere else, so it reads the same on an air-gapped laptop.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from cluster.secrets import redact
from reports.plot import timeline_svg
from reports.run import RunReport, ScenarioResult, load_run
from scenarios.faults import FAULTS

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.passed{color:#2e7d32;font-weight:600}.failed,.error{color:#b00020;font-weight:600}
.skipped,.not-run{color:#777}.verdict{font-size:18px;padding:6px 10px;display:inline-block;border-radius:4px}
.verdict.passed{background:#e8f5e9}.verdict.failed{background:#fdecea}.over{color:#b00020}
figure{margin:12px 0 20px}figcaption{font-size:13px;margin-bottom:4px}code{font-size:12px}
"""


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _within(value: float | None, bound: float | None) -> bool:
    return value is not None and bound is not None and value <= bound


def overall(report: RunReport) -> str:
    outcomes = [t.outcome for t in report.tests.values()] + [s.verdict for s in report.scenarios.values()]
    return "failed" if any(o in ("failed", "error") for o in outcomes) or not outcomes else "passed"


def _fail_closed_bound(result: ScenarioResult) -> float | None:
    if result.expected_fail_closed_s is None:
        return None
    return result.expected_fail_closed_s + result.tolerance_s


def audit_cell(result: ScenarioResult) -> str:
    """The refusals Vault audited during the scenario, by reason, as Prometheus counted them, and whether the
    expected one was proven (scenarios/evidence.py); "none expected" where Vault refuses nothing."""
    audit = result.data.get("audit")
    if not audit:
        return "none expected"
    if not audit.get("checked"):
        return f"not checked: {audit.get('detail', '')}"
    counts = ", ".join(f"{reason} {count:g}" for reason, count in (audit.get("denials_by_reason") or {}).items())
    expected = (audit.get("expected") or {}).get("reason", "")
    return f"{counts or 'none counted'} (expected {expected}: {'proven' if audit.get('proven') else 'NOT proven'})"


def scenario_rows(report: RunReport) -> list[tuple[str, ScenarioResult | None]]:
    """Every known scenario id, run or not, then any other the run has."""
    ids = list(FAULTS) + sorted(set(report.scenarios) - set(FAULTS))
    return [(scenario_id, report.scenarios.get(scenario_id)) for scenario_id in ids]


def _html_scenarios(report: RunReport) -> str:
    rows = []
    for scenario_id, result in scenario_rows(report):
        if result is None:
            rows.append(f'<tr><td><a id="s-{scenario_id}"></a>{scenario_id}</td><td class="not-run">not run</td>'
                        "<td></td><td></td><td></td><td></td>")
            continue
        bound = _fail_closed_bound(result)
        closed = "no failures allowed" if result.data.get("zero_failures") else (
            f'<span class="{"" if _within(result.time_to_fail_closed_s, bound) else "over"}">'
            f"{_seconds(result.time_to_fail_closed_s)}</span> / bound {_seconds(bound)}")
        recover_class = "" if _within(result.time_to_recover_s, result.recovery_bound_s) else "over"
        recover = (f'<span class="{recover_class}">{_seconds(result.time_to_recover_s)}</span> / '
                   f"bound {_seconds(result.recovery_bound_s)}")
        rows.append(f'<tr><td><a href="#plot-{scenario_id}">{scenario_id}</a></td>'
                    f'<td class="{result.verdict}">{result.verdict}</td><td>{closed}</td><td>{recover}</td>'
                    f"<td>{len(result.violations)}</td><td>{escape(redact(audit_cell(result)))}</td></tr>")
    return ("<table><tr><th>scenario</th><th>verdict</th><th>time to fail closed</th><th>time to recover</th>"
            "<th>violations</th><th>Vault refusals audited</th></tr>" + "".join(rows) + "</table>")


def _html_plots(report: RunReport) -> str:
    figures = []
    for scenario_id, result in report.scenarios.items():
        evidence = escape(redact(result.fault_evidence))
        violations = "".join(f"<li>{escape(redact(v))}</li>" for v in result.violations[:10])
        figures.append(f'<figure id="plot-{scenario_id}"><figcaption><b>{scenario_id}</b> '
                       f'<span class="{result.verdict}">{result.verdict}</span> — fault evidence: {evidence}'
                       f"{f'<ul>{violations}</ul>' if violations else ''}</figcaption>"
                       f"{timeline_svg(result.data)}</figure>")
    return "".join(figures) or "<p>No chaos scenario ran in this run.</p>"


def _html_tests(report: RunReport) -> str:
    rows = "".join(
        f'<tr><td><code>{escape(t.nodeid)}</code></td><td class="{t.outcome}">{t.outcome}</td>'
        f"<td>{t.duration_s:.1f} s</td><td>{escape(redact(t.message))}</td></tr>"
        for t in sorted(report.tests.values(), key=lambda t: (t.outcome == "passed", t.nodeid)))
    return ("<table><tr><th>test</th><th>verdict</th><th>time</th><th>message</th></tr>" + rows + "</table>"
            if rows else "<p>No JUnit results.</p>")


def _versions(report: RunReport) -> dict[str, str]:
    meta = report.meta
    found = {"run": report.run_id, "platform": str(meta.get("platform", "?")), "profile": str(meta.get("profile", "?"))}
    found.update({str(k): str(v) for k, v in (meta.get("versions") or {}).items()})
    return found


def render_html(report: RunReport) -> str:
    verdict = overall(report)
    counts = {o: sum(1 for t in report.tests.values() if t.outcome == o) for o in ("passed", "failed", "error",
                                                                                  "skipped")}
    versions = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _versions(report).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>trustgrid {escape(report.run_id)}: {verdict}</title>
<style>{STYLE}</style></head><body>
<h1>trustgrid run {escape(report.run_id)}</h1>
<p><span class="verdict {verdict}">{verdict}</span>
 {counts["passed"]} passed, {counts["failed"]} failed, {counts["error"]} errors, {counts["skipped"]} skipped;
 {sum(1 for s in report.scenarios.values() if s.verdict == "passed")} of {len(report.scenarios)} scenarios passed</p>
<h2>Scenarios</h2>{_html_scenarios(report)}
<h2>Timelines</h2>{_html_plots(report)}
<h2>Tests</h2>{_html_tests(report)}
<h2>Versions</h2><table>{versions}</table>
</body></html>
"""


def render_markdown(report: RunReport) -> str:
    lines = [f"# trustgrid run {report.run_id}: {overall(report)}", ""]
    lines += [f"- {k}: {v}" for k, v in _versions(report).items()]
    lines += ["", "| scenario | verdict | fail closed (bound) | recover (bound) | violations "
                  "| Vault refusals audited |", "|---|---|---|---|---|---|"]
    for scenario_id, result in scenario_rows(report):
        if result is None:
            lines.append(f"| {scenario_id} | not run | | | | |")
            continue
        lines.append(f"| {scenario_id} | {result.verdict} | {_seconds(result.time_to_fail_closed_s)} "
                     f"({_seconds(_fail_closed_bound(result))}) | {_seconds(result.time_to_recover_s)} "
                     f"({_seconds(result.recovery_bound_s)}) | {len(result.violations)} "
                     f"| {redact(audit_cell(result)).replace('|', '/')} |")
    failed = [t for t in report.tests.values() if t.outcome in ("failed", "error")]
    lines += ["", f"{len(report.tests)} tests, {len(failed)} failed"]
    lines += [f"- FAILED `{t.nodeid}`: {redact(t.message)}" for t in failed]
    return "\n".join(lines) + "\n"


def write_summary(run_dir: Path) -> Path:
    """Write summary.html, summary.md and plots/<scenario>.svg; returns the HTML path."""
    report = load_run(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    for scenario_id, result in report.scenarios.items():
        (plots / f"{scenario_id}.svg").write_text(timeline_svg(result.data))
    (run_dir / "summary.md").write_text(render_markdown(report))
    html = run_dir / "summary.html"
    html.write_text(render_html(report))
    return html
