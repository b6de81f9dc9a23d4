"""The reporting side of a run, as a pytest plugin (registered by the root conftest).

- JUnit XML by default in reports/out/<run-id>/junit.xml, Allure results in
  reports/out/<run-id>/allure-results/ (unless the user chose other places);
- Allure labels: epic by area, feature by module, story per scenario id;
  environment.properties and categories.json for the Allure report;
- on a failure, the platform's component logs, redacted, as attachments;
- at the end, run.json, summary.html and summary.md, and one line saying where.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.secrets import redact
from cluster.settings import Settings
from reports import attach
from reports.run import RUN_FILE, ReportError
from reports.summary import write_summary

AREAS = ("chaos", "conformance", "upgrade")
FEATURES = {
    "test_kubernetes_auth": "Kubernetes auth", "test_platform_setup": "Platform setup", "test_mtls": "mTLS",
    "test_app_vault": "Application Vault agent", "test_live_policy": "Live policy", "test_scenarios": "Scenarios",
}
# Allure's categories: product defects are told apart from a broken platform.
CATEGORIES = [
    {"name": "fail-open detected", "matchedStatuses": ["failed"],
     "messageRegex": r"(?s).*(plaintext|succeeded after the fail-closed|never failed closed|naked|violations).*"},
    {"name": "recovery too slow", "matchedStatuses": ["failed"],
     "messageRegex": r"(?s).*(never recovered|time_to_recover|recovered within|failed closed after).*"},
    {"name": "platform unavailable", "matchedStatuses": ["broken", "failed"],
     "messageRegex": r"(?s).*(PlatformUnavailable|ProcessFailed|no platform was started|trustgrid: ).*"},
    {"name": "conformance finding", "matchedStatuses": ["failed"], "messageRegex": r"(?s).*fix: .*"},
]


class ReportPlugin:
    def __init__(self, settings: Settings, worker: bool) -> None:
        self.settings = settings
        self.worker = worker
        self.run_dir = settings.run_report_dir
        self.started = time.time()
        self.meta: dict[str, Any] = {"run_id": settings.run_id, "profile": settings.profile.name,
                                     "profile_path": str(settings.profile.path), "platform": settings.platform}

    # -- where things go -------------------------------------------------------
    def set_defaults(self, config: pytest.Config) -> None:
        """Called from the root conftest's pytest_configure, before junitxml and allure read their options."""
        if not self.worker and not config.option.xmlpath:
            config.option.xmlpath = str(self.run_dir / "junit.xml")
        if hasattr(config.option, "allure_report_dir") and not config.option.allure_report_dir:
            config.option.allure_report_dir = str(self.allure_dir)

    @property
    def allure_dir(self) -> Path:
        return self.run_dir / "allure-results"

    def record_platform(self, name: str, versions: dict[str, str]) -> None:
        self.meta.update(platform=name, versions=versions)
        self._write_meta()
        if not self.worker:
            self._write_allure_environment()

    def _write_meta(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / RUN_FILE).write_text(json.dumps(self.meta, indent=1))

    def _write_allure_environment(self) -> None:
        self.allure_dir.mkdir(parents=True, exist_ok=True)
        versions = self.meta.get("versions") or {}
        lines = {"platform": self.meta["platform"], "profile": self.meta["profile"], "run_id": self.meta["run_id"],
                 **{k.replace(" ", "_"): v for k, v in versions.items()}}
        (self.allure_dir / "environment.properties").write_text(
            "".join(f"{k}={redact(str(v))}\n" for k, v in lines.items()))
        (self.allure_dir / "categories.json").write_text(json.dumps(CATEGORIES, indent=1))

    # -- labels ------------------------------------------------------------------
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            area = next((a for a in AREAS if item.get_closest_marker(a)), "project tests")
            module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
            item.add_marker(pytest.mark.allure_label(area, label_type="epic"))
            item.add_marker(pytest.mark.allure_label(FEATURES.get(module, module), label_type="feature"))
            callspec = getattr(item, "callspec", None)
            scenario = callspec.params.get("scenario_id") if callspec is not None else None
            if scenario:
                item.add_marker(pytest.mark.allure_label(str(scenario), label_type="story"))

    # -- evidence on failure -----------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if report.failed and report.when == "call" and "platform" in getattr(item, "fixturenames", ()):
            platform = item.funcargs.get("platform")  # type: ignore[attr-defined]
            if platform is not None:
                attach.platform_logs(platform, self.run_dir / "logs" / _safe(item.nodeid))

    # -- the end -------------------------------------------------------------------
    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        """After junitxml has written its file (terminal summaries come after every sessionfinish)."""
        if self.worker or terminalreporter.config.option.collectonly or not self.run_dir.exists():
            return
        self.meta.update(finished=time.time(), started=self.started, exit_status=int(exitstatus))
        self._write_meta()
        chosen = Path(str(terminalreporter.config.option.xmlpath or ""))
        ours = self.run_dir / "junit.xml"
        if chosen.is_file() and chosen.resolve() != ours.resolve():
            shutil.copyfile(chosen, ours)  # --junitxml elsewhere: the run's own report still has it
        try:
            html = write_summary(self.run_dir)
        except (ReportError, OSError) as err:  # a report must never hide the run's own result
            terminalreporter.write_line(f"trustgrid: no summary: {err}")
            return
        terminalreporter.write_line(f"trustgrid: summary {html} (and summary.md); "
                                    f"compare two runs with: python -m reports compare RUN_A RUN_B")


def _safe(nodeid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in nodeid)[:150]
