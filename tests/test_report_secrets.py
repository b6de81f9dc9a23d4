"""A local suite run: its reports are complete, and hold no secret anywhere.

It runs every suite but suites/upgrade, whose tests each open platforms of their own: the gate scans
its own three runs and comparisons the same way (suites/upgrade/test_gate.py), and the project's
test command runs suites/upgrade beside this test anyway.

The run keeps its cluster (--keep-cluster) just long enough for this test to
read the real root token and unseal keys from the state directory, so the
scan looks for those exact values as well as for every token, JWT and PEM
private key pattern; then the cluster is taken down.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.runstate import runs_root
from cluster.secrets import find_secrets, redact
from scenarios.faults import FAULTS
from tests.lifecycle import ROOT

pytestmark = pytest.mark.platform


def _kept_secrets(run_id: str) -> list[str]:
    """The root token, the unseal keys, and the token Prometheus scrapes OpenBao's sys/metrics with."""
    init = json.loads((runs_root() / run_id / "vault-init.json").read_text())
    metrics = (runs_root() / run_id / "monitoring" / "vault-token").read_text().strip()
    return [init["root_token"], *init["keys_base64"], metrics]


def test_a_suite_run_has_complete_reports_and_no_secret_in_them(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "-m", "not upgrade", "-n", "2", "-rA", "-p", "no:cacheprovider",
         "--report-dir", str(reports), "--keep-cluster"],
        cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False)
    output = result.stdout + result.stderr
    runs = [p for p in reports.glob("tg-*") if p.is_dir()]
    assert len(runs) == 1, f"expected one run directory in {reports}: {runs}\n{output[-3000:]}"
    run_dir = runs[0]
    kept = runs_root() / run_dir.name
    try:
        assert (kept / "vault-init.json").exists(), (
            f"the kept run {kept} has no vault-init.json (exit {result.returncode}; state directories now: "
            f"{sorted(p.name for p in runs_root().iterdir()) if runs_root().is_dir() else []}; kept: "
            f"{sorted(p.name for p in kept.iterdir()) if kept.is_dir() else 'gone'})\n{redact(output[-4000:])}")
        exact = _kept_secrets(run_dir.name)
    finally:
        subprocess.run([sys.executable, "-m", "cluster", "down", run_dir.name], cwd=ROOT, check=False,
                       capture_output=True, timeout=120)
    assert len(exact) >= 4  # the scan really knows the root token, the unseal keys and the metrics token

    files = [p for p in run_dir.rglob("*") if p.is_file()]
    # The scan reads Prometheus's answers (each timeline's audit evidence, the conformance refusal's) and the
    # exporter's metrics page.
    audited = [json.loads(p.read_text()).get("audit") for p in (run_dir / "timelines").glob("*.json")]
    assert any(a and a.get("asked") for a in audited), "no timeline kept Prometheus's answers"
    assert {"exporter-metrics.txt", "conformance-refusal.json"} <= {p.name for p in (run_dir / "audit").iterdir()}
    assert "vault_audit_denials_total" in (run_dir / "audit" / "exporter-metrics.txt").read_text()
    hits = []
    for name, text in [("pytest output", output)] + [(str(p), p.read_text(errors="replace")) for p in files]:
        found = find_secrets(text) + ["a root token or unseal key" for value in exact if value in text]
        hits += [f"{name}: {what}" for what in found]
    assert hits == [], "\n".join(hits[:20])

    # The evidence is all there.
    assert result.returncode == 0, output[-5000:]
    html = (run_dir / "summary.html").read_text()
    assert all(scenario_id in html for scenario_id in FAULTS) and "not run" not in html
    assert (run_dir / "junit.xml").exists() and (run_dir / "summary.md").exists()
    allure = run_dir / "allure-results"
    assert (allure / "environment.properties").read_text().count("=") >= 5
    assert "fail-open detected" in (allure / "categories.json").read_text()
    results = [json.loads(p.read_text()) for p in allure.glob("*-result.json")]
    stories = {label["value"] for r in results for label in r.get("labels", []) if label["name"] == "story"}
    assert stories >= set(FAULTS)
    assert list(allure.glob("*-attachment.svg")), "no timeline plot was attached"
    chaos = [r for r in results if any(lb["value"] == "chaos" for lb in r.get("labels", []) if lb["name"] == "epic")]
    assert chaos and all(len(r.get("steps", [])) >= 4 for r in chaos), "scenario phases are not Allure steps"
