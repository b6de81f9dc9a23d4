"""The audit alerts (cluster/audit/alerts.yaml) checked and unit-tested by the real promtool: each fires on
the series that should fire it, with its labels and text, and not before."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[1] / "cluster" / "audit"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed; fix: run ./scripts/bootstrap (it installs Debian's prometheus)",
                    pytrace=False)
    return found


def test_the_rules_file_is_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", "alerts.yaml"], cwd=RULES, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and "4 rules found" in result.stdout, result.stdout + result.stderr


def test_each_alert_fires_when_it_should_and_not_before() -> None:
    result = subprocess.run([promtool(), "test", "rules", "alerts_test.yaml"], cwd=RULES, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
