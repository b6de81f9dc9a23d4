"""The timeline's figures and verdict, computed from samples alone."""

from __future__ import annotations

import json
from pathlib import Path

from scenarios.monitor import Sample
from scenarios.timeline import Timeline


def samples(probe: str, outcomes: str, start: float = 0.0, step: float = 0.2, took: float = 0.05) -> list[Sample]:
    """'..xx..' -> ok, ok, fail, fail, ok, ok, started at 0.2 s steps, each answered ``took`` later."""
    return [Sample(round(start + i * step, 3), round(start + i * step + took, 3), probe,
                   "ok" if c == "." else ("plaintext" if c == "p" else "reset"), "")
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
    assert set(data["samples"][0]) == {"t", "end", "probe", "outcome", "detail"}
    again = Timeline.from_json(data)
    assert again.as_json() == data
    assert (tmp_path / "latest").resolve() == run_dir.resolve()


def test_a_success_that_straddles_the_restore_counts_for_neither_side() -> None:
    # The last sample before the restore started at 2.8 and answered at 3.1, after the restore at 3.0.
    tl = timeline("." * 5 + "." * 4 + "x" * 5 + "." + "." * 6)
    assert tl.samples[14].t == 2.8
    tl.samples[14] = Sample(2.8, 3.1, "mesh", "ok", "")
    assert tl.time_to_fail_closed_s == 0.8
    assert tl.verdict == "passed"


def test_a_success_that_started_before_the_deadline_is_no_violation_even_if_it_answered_after() -> None:
    tl = timeline("." * 5 + "." * 4 + "." + "x" * 5 + "x" + "." * 6, tolerance_s=0.1)
    tl.samples[9] = Sample(1.8, 2.15, "mesh", "ok", "")  # started before t=2.1, answered after it
    assert tl.violations == []


def test_a_legacy_timeline_without_ends_is_read_with_each_sample_ending_at_the_next_start() -> None:
    data = timeline("." * 9 + "x" * 7 + "." * 6).as_json()
    for sample in data["samples"]:
        del sample["end"]
    again = Timeline.from_json(data)
    assert [s.end for s in again.samples[:2]] == [0.2, 0.4]
    assert again.samples[-1].end == float("inf")


CASES = Path(__file__).parent / "cases"


def test_the_shared_case_policy_revocation_probe_straddling_the_restore_passes() -> None:
    """A real run judged "access never failed closed": the last Vault sample started 10 ms before the
    restore and answered after it, and was counted as a success before the restore."""
    data = json.loads((CASES / "policy-revocation-probe-straddles-restore.json").read_text())
    assert data["verdict"] == "failed" and data["time_to_fail_closed_s"] is None  # as the old rule judged it
    tl = Timeline.from_json(data)
    assert tl.verdict == "passed", tl.as_json()
    assert tl.time_to_fail_closed_s == 0.162  # the first 403 that started after the fault (t=0.67)
    assert tl.time_to_recover_s == 0.151
    assert tl.violations == []
