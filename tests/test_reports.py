"""Reports: summary pages, the timeline plot and run comparison, from synthetic runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from reports.__main__ import main as reports_main
from reports.compare import compare_runs
from reports.plot import timeline_svg
from reports.run import ReportError, load_run, resolve_run
from reports.summary import write_summary
from scenarios.faults import FAULTS

JUNIT = '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>'


def timeline(scenario: str, *, verdict: str = "passed", closed: float | None = 10.0,
             recover: float | None = 1.0) -> dict[str, Any]:
    samples = [{"t": t / 5, "probe": probe, "outcome": "ok" if t < 40 or t > 60 else "refused", "detail": ""}
               for t in range(80) for probe in ("mesh", "vault")]
    return {"scenario": scenario, "platform": "local", "verdict": verdict, "violations": [],
            "fault_at": 2.0, "restored_at": 12.5, "expected_fail_closed_at": 11.0, "expected_fail_closed_s": 9.0,
            "time_to_fail_closed_s": closed, "time_to_recover_s": recover, "tolerance_s": 2.0,
            "recovery_bound_s": 30.0, "must_fail": ["mesh"], "zero_failures": False, "fault_took_effect": True,
            "fault_evidence": "Vault reports the role missing", "steady_again": True, "steady_evidence": "",
            "notes": [], "samples": samples}


def make_run(folder: Path, *, tests: dict[str, str], scenarios: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True)
    cases = []
    for nodeid, outcome in tests.items():
        module, name = nodeid.split("::")
        classname = module.removesuffix(".py").replace("/", ".")
        body = {"passed": "", "failed": '<failure message="assert 1 == 2">x</failure>',
                "skipped": '<skipped message="no"/>'}[outcome]
        cases.append(f'<testcase classname="{classname}" name="{name}" time="1.5">{body}</testcase>')
    (folder / "junit.xml").write_text(JUNIT.format(cases="".join(cases)))
    (folder / "timelines").mkdir()
    for data in scenarios:
        (folder / "timelines" / f"{data['scenario']}.json").write_text(json.dumps(data))
    (folder / "run.json").write_text(json.dumps({"run_id": folder.name, "platform": "local", "profile": "default",
                                                 "versions": {"kube-apiserver": "v1.35.4", "vault": "OpenBao v2"}}))
    return folder


T1 = "suites/conformance/test_mtls.py::test_a"
T2 = "suites/chaos/test_scenarios.py::test_chaos[vault-seal]"


def test_the_summary_shows_every_scenario_its_bounds_plots_and_versions(tmp_path: Path) -> None:
    run = make_run(tmp_path / "tg-a", tests={T1: "passed", T2: "failed"},
                   scenarios=[timeline("vault-seal", verdict="failed", closed=None)])
    html = write_summary(run).read_text()
    for scenario_id in FAULTS:
        assert scenario_id in html
    assert html.count("not run") == len(FAULTS) - 1
    assert "v1.35.4" in html and "OpenBao v2" in html
    assert "<svg" in html and "expected fail-closed" in html
    assert "time to fail closed" in html and "bound 11.00 s" in html
    assert re.search(r'class="verdict failed"', html)
    # Offline: nothing is fetched from anywhere.
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert "<script" not in html
    markdown = (run / "summary.md").read_text()
    assert "| vault-seal | failed |" in markdown and f"FAILED `{T2}`" in markdown
    assert (run / "plots" / "vault-seal.svg").read_text().startswith("<svg")


def test_the_plot_marks_fault_restore_and_expected_fail_closed() -> None:
    svg = timeline_svg(timeline("role-revocation"))
    for label in ("fault (t=2.0s)", "expected fail-closed (t=11.0s)", "restore (t=12.5s)"):
        assert label in svg
    assert svg.count("<rect") > 100  # one mark per sample


def test_compare_reports_a_verdict_change_and_a_timing_regression(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path / "tg-a", tests={T1: "passed", T2: "passed"},
                 scenarios=[timeline("vault-seal"), timeline("role-revocation", recover=1.0)])
    b = make_run(tmp_path / "tg-b", tests={T1: "failed", T2: "passed"},
                 scenarios=[timeline("vault-seal", closed=10.5), timeline("role-revocation", recover=4.0)])
    changes = compare_runs(load_run(a), load_run(b))
    assert [(c.kind, c.name, c.regression) for c in changes] == [
        ("test", T1, True), ("timing", "role-revocation: time to recover", True)]
    assert reports_main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "regression: +3.00 s" in out and "2 regression(s)" in out
    # Small jitter is not a regression, and a run compared with itself is clean.
    assert reports_main(["compare", str(a), str(a)]) == 0
    assert "no verdict changes" in capsys.readouterr().out


def test_a_fixed_test_is_reported_but_is_no_regression(tmp_path: Path) -> None:
    a = make_run(tmp_path / "tg-a", tests={T1: "failed"}, scenarios=[])
    b = make_run(tmp_path / "tg-b", tests={T1: "passed"}, scenarios=[])
    assert [(c.note, c.regression) for c in compare_runs(load_run(a), load_run(b))] == [("fixed", False)]


def test_compare_gives_one_clear_line_for_a_missing_or_corrupt_report(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_run(tmp_path / "tg-good", tests={T1: "passed"}, scenarios=[])
    assert reports_main(["--reports", str(tmp_path), "compare", "tg-missing", str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reports: no report directory 'tg-missing'") and "\n" not in err
    corrupt = make_run(tmp_path / "tg-corrupt", tests={T1: "passed"}, scenarios=[])
    (corrupt / "junit.xml").write_text("<testsuites><testcase")
    assert reports_main(["compare", str(good), str(corrupt)]) == 2
    assert "cannot be read as JUnit XML" in capsys.readouterr().err
    (corrupt / "junit.xml").unlink()
    (corrupt / "timelines" / "x.json").write_text("{not json")
    with pytest.raises(ReportError, match="not a readable timeline"):
        load_run(corrupt)
    empty = tmp_path / "tg-empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"neither junit\.xml nor timelines"):
        load_run(empty)


def test_runs_resolve_by_id_and_latest(tmp_path: Path) -> None:
    run = make_run(tmp_path / "tg-1", tests={T1: "passed"}, scenarios=[])
    (tmp_path / "latest").symlink_to("tg-1")
    assert resolve_run("tg-1", tmp_path) == run.resolve()
    assert resolve_run(str(tmp_path / "latest"), tmp_path) == run.resolve()
