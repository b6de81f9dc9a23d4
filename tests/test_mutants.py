"""Mutant profiles: each known-bad setup is caught by exactly the tests its header names.

Each mutant in cluster/profiles/mutants/ declares, under ``mutant.must_fail``,
the conformance tests it must fail. Running ``pytest suites/conformance
--profile <mutant>`` on the live local platform must fail those tests and no
others. A mutant that slips through, or a check that fails for the wrong
reason, shows up as a difference. That the default profile fails none is what
the project's test command proves anyway, by running suites/conformance on it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from cluster.profile import PROFILES_DIR, load_profile

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = sorted((PROFILES_DIR / "mutants").glob("*.yaml"))
CONFORMANCE = ROOT / "suites" / "conformance"


def declared_failures(profile: Path) -> set[str]:
    data = yaml.safe_load(profile.read_text()) or {}
    return set((data.get("mutant") or {}).get("must_fail") or [])


def conformance_tests() -> set[str]:
    """Every conformance test id, read from the source (no platform needed)."""
    found = set()
    for path in CONFORMANCE.glob("test_*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                found.add(f"{path.relative_to(ROOT)}::{node.name}")
    return found


def failed_tests(junit: Path) -> set[str]:
    failed = set()
    for case in ET.parse(junit).getroot().iter("testcase"):
        if any(child.tag in ("failure", "error") for child in case):
            module = str(case.get("classname")).replace(".", "/") + ".py"
            failed.add(f"{module}::{str(case.get('name')).split('[')[0]}")
    return failed


def test_there_are_at_least_five_mutants() -> None:
    assert len(MUTANTS) >= 5, [m.name for m in MUTANTS]


@pytest.mark.parametrize("profile", MUTANTS, ids=lambda p: p.stem)
def test_each_mutant_loads_and_names_real_tests(profile: Path) -> None:
    load_profile(profile)  # a valid profile: bad setups must stay installable
    declared = declared_failures(profile)
    assert declared, f"{profile.name} declares no tests under mutant.must_fail"
    assert declared <= conformance_tests(), f"{profile.name} names unknown tests: {declared - conformance_tests()}"
    assert "setup" in yaml.safe_load(profile.read_text()), f"{profile.name} must override setup"


@pytest.mark.platform
@pytest.mark.parametrize("profile", MUTANTS, ids=lambda p: p.stem)
def test_conformance_fails_exactly_the_declared_tests(profile: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(CONFORMANCE.relative_to(ROOT)), "--profile", str(profile), "-q",
         "-n", "2", "-p", "no:cacheprovider", f"--junitxml={junit}", "--report-dir", str(tmp_path / "reports")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert junit.exists(), f"no junit report; pytest said:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    failed = failed_tests(junit)
    expected = declared_failures(profile)
    assert failed == expected, (
        f"{profile.name}: failed {sorted(failed)}\n  but declared {sorted(expected)}\n"
        f"  missed (a check let the mutant through): {sorted(expected - failed)}\n"
        f"  extra (failed for another reason): {sorted(failed - expected)}\n{result.stdout[-4000:]}")
    assert result.returncode == 1, result.stdout[-2000:]
