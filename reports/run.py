"""One run's report directory, read back: reports/out/<run-id>/.

    run.json        run id, platform, profile, versions, exit status
    junit.xml       every test's verdict
    timelines/      one JSON per chaos scenario (scenarios/timeline.py)

Anything missing or corrupt is a ReportError with one line that says which
file and what to do, never a traceback.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.errors import TrustgridError

RUN_FILE = "run.json"
JUNIT_FILE = "junit.xml"


class ReportError(TrustgridError):
    """A report directory that is missing or cannot be read."""


@dataclass(frozen=True)
class TestVerdict:
    nodeid: str
    outcome: str  # passed, failed, error or skipped
    duration_s: float
    message: str = ""


@dataclass(frozen=True)
class ScenarioResult:
    id: str
    verdict: str
    time_to_fail_closed_s: float | None
    expected_fail_closed_s: float | None
    tolerance_s: float
    time_to_recover_s: float | None
    recovery_bound_s: float
    violations: tuple[str, ...]
    fault_evidence: str
    data: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioResult:
        return cls(id=str(data["scenario"]), verdict=str(data["verdict"]),
                   time_to_fail_closed_s=data.get("time_to_fail_closed_s"),
                   expected_fail_closed_s=data.get("expected_fail_closed_s"),
                   tolerance_s=float(data.get("tolerance_s") or 0),
                   time_to_recover_s=data.get("time_to_recover_s"),
                   recovery_bound_s=float(data.get("recovery_bound_s") or 0),
                   violations=tuple(data.get("violations") or ()), fault_evidence=str(data.get("fault_evidence", "")),
                   data=data)


@dataclass(frozen=True)
class RunReport:
    path: Path
    meta: dict[str, Any]
    tests: dict[str, TestVerdict]
    scenarios: dict[str, ScenarioResult]

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)


def nodeid_of(classname: str, name: str) -> str:
    """junit's dotted classname back to a pytest node id: suites.chaos.test_x -> suites/chaos/test_x.py."""
    return f"{classname.replace('.', '/')}.py::{name}"


def read_junit(path: Path) -> dict[str, TestVerdict]:
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - the run's own junit.xml, written by pytest
    except (OSError, ET.ParseError) as err:
        raise ReportError(f"{path} cannot be read as JUnit XML ({err})",
                          fix="rerun the suite; it writes junit.xml by default") from None
    verdicts = {}
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or "").splitlines()[0][:300] if child.get("message") else ""
                break
        nodeid = nodeid_of(str(case.get("classname")), str(case.get("name")))
        verdicts[nodeid] = TestVerdict(nodeid, outcome, float(case.get("time") or 0), message)
    return verdicts


def read_timelines(folder: Path) -> dict[str, ScenarioResult]:
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            result = ScenarioResult.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ReportError(f"{path} is not a readable timeline ({type(err).__name__}: {err})",
                              fix="rerun the scenario, or remove the damaged file") from None
        found[result.id] = result
    return found


def resolve_run(name: str, base: Path) -> Path:
    """A run by path, by run id under the reports folder, or 'latest'."""
    candidate = Path(name)
    if candidate.is_dir():
        return candidate.resolve()  # 'latest' is a symlink: name the run it points to
    under = base / name
    if under.is_dir():
        return under.resolve()
    known = sorted(p.name for p in base.glob("tg-*") if p.is_dir())[-3:] if base.is_dir() else []
    raise ReportError(f"no report directory {name!r} (looked at {candidate} and {under})",
                      fix=f"pass a run directory or a run id from {base}" + (f", such as {known[-1]}" if known else ""))


def load_run(path: Path) -> RunReport:
    if not path.is_dir():
        raise ReportError(f"{path} is not a report directory", fix="pass reports/out/<run-id>")
    meta: dict[str, Any] = {}
    if (path / RUN_FILE).exists():
        try:
            meta = json.loads((path / RUN_FILE).read_text())
        except ValueError as err:
            raise ReportError(f"{path / RUN_FILE} is corrupt ({err})", fix="rerun the suite") from None
    junit = path / JUNIT_FILE
    tests = read_junit(junit) if junit.exists() else {}
    scenarios = read_timelines(path / "timelines")
    if not tests and not scenarios:
        raise ReportError(f"{path} holds neither {JUNIT_FILE} nor timelines/", fix="pass the directory of a run")
    return RunReport(path, meta, tests, scenarios)
