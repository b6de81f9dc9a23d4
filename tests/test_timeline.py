"""The timeline's figures and verdict, computed from samples alone."""

from __future__ import annotations

import json
from pathlib import Path

from scenarios.monitor import Sample
from scenarios.timeline import Timeline


def samples(probe: str, outcomes: str, start: float = 0.0, step: float = 0.2) -> list[Sample]:
    """'..xx..' -> ok, ok, fail, fail, ok, ok at 0.2 s steps."""
    return [Sample(round(start + i * step, 3), probe, "ok" if c == "." else ("plaintext" if c == "p" else "reset"), "")
            for i, c in enumerate(outcomes)]


def timeline(outcomes: str, **overrides: object) -> Timeline:
    tl = Timeline(scenario="vault-seal", platform="local", must_fail=("mesh",), zero_failures=False,
                  tolerance_s=0.5, recovery_bound_s=2.0, samples=samples("mesh", outcomes),
                  fault_at=1.0, expected_fail_closed_at=2.0, restored_at=3.0, fault_took_effect=True,
                  steady_again=True)
    for key, value in overrides.items():
        setattr(tl, key, value)
    return tl


def test_a_clean_fail_closed_and_recovery_passes() -> None:
    #       t=0.0 ........ 1.0 fault .... 2.0 xxxxx 3.0 restore x... ok
    tl = timeline("." * 5 + "." * 4 + "x" * 6 + "x" + "." * 6)
    assert tl.time_to_fail_closed_s == 0.8
    assert tl.time_to_recover_s == 0.2
    assert tl.violations == []
    assert tl.verdict == "passed"


def test_a_success_after_the_deadline_is_a_violation() -> None:
    tl = timeline("." * 5 + "." * 4 + "xx" + "." + "xxx" + "." * 7)  # one success at t=2.2
    tl.tolerance_s = 0.1
    assert tl.violations == ["t=2.2: mesh succeeded after the fail-closed deadline t=2.100"]
    assert tl.verdict == "failed"


def test_never_failing_closed_fails() -> None:
    tl = timeline("." * 22)
    assert tl.time_to_fail_closed_s is None
    assert tl.verdict == "failed"


def test_failing_closed_too_late_fails() -> None:
    tl = timeline("." * 5 + "." * 7 + "xxx" + "x" + "." * 6, tolerance_s=0.1)
    assert tl.time_to_fail_closed_s == 1.4 and tl.expected_fail_closed_s == 1.0
    assert tl.verdict == "failed"


def test_plaintext_is_always_a_violation_and_recovery_needs_three_in_a_row() -> None:
    tl = timeline("." * 3 + "p" + "." * 5 + "x" * 6 + "x" + ".x.x.x...")
    assert tl.violations == ["t=0.6: mesh succeeded in plaintext"]
    assert tl.time_to_recover_s == 1.4  # the first run of three successes after t=3.0 starts at t=4.4


def test_zero_failure_scenarios_allow_no_failed_sample() -> None:
    tl = timeline("." * 10 + "x" + "." * 10, zero_failures=True, must_fail=(), expected_fail_closed_at=None)
    assert tl.violations == ["t=2.0: mesh failed (reset: ) where no failure is allowed"]
    assert tl.verdict == "failed"


def test_no_recovery_fails() -> None:
    assert timeline("." * 9 + "x" * 13).verdict == "failed"


def test_the_json_has_the_documented_fields_and_latest_points_to_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "tg-run-1"
    path = timeline("." * 9 + "x" * 7 + "." * 6).write(run_dir)
    data = json.loads(path.read_text())
    for key in ("scenario", "platform", "verdict", "violations", "fault_at", "restored_at",
                "expected_fail_closed_at", "time_to_fail_closed_s", "time_to_recover_s", "samples"):
        assert key in data
    assert set(data["samples"][0]) == {"t", "probe", "outcome", "detail"}
    assert (tmp_path / "latest").resolve() == run_dir.resolve()
