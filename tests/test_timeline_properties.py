"""Property tests: a scenario's verdict depends on what the system did, never on how long a probe took.

Each example is a synthetic run. The system opens and closes access at known moments; each probe
runs one sample at a time, as the Monitor does (a tick every ``PERIOD``, or at once when the previous
sample overran it), takes a random time to answer, and the system decides its outcome at a random
moment inside that interval. The timeline must judge every such run the way the system behaved:
passed when access failed closed within the bound and came back, failed when it did not, whatever
the probes' durations and wherever inside them the decisions fell.

A system is judged only outside a band of one sampling interval (``PERIOD`` + the longest probe)
around each bound: inside it, no sampler can tell.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.monitor import Sample
from scenarios.timeline import CONVERGE, Timeline

PERIOD = 1 / 6  # the Monitor's 6 Hz
LONGEST = 0.6  # the longest a probe takes in these runs (a loaded machine)
RESOLUTION = PERIOD + LONGEST
FAULT_AT = 5.0
EXPECTED_S = 1.0  # the fault's bound: access must be closed this long after the fault
TOLERANCE_S = RESOLUTION + 0.05
RECOVERY_BOUND_S = 10.0

Open = Callable[[float], bool]


@dataclass(frozen=True)
class Probing:
    """How one probe's samples went: durations up to ``longest`` (a share of them stalled at the
    longest, as on a loaded machine) and where in each the system decided, all from ``draw``."""

    draw: random.Random
    longest: float
    stalls: float


def probing() -> st.SearchStrategy[Probing]:
    # A seeded generator, not Hypothesis's own draws: a run has hundreds of samples, and the seed
    # reproduces them all (Hypothesis still varies the seed, the longest duration and the stalls).
    return st.builds(Probing, st.integers(0, 2**32).map(random.Random), st.floats(0.001, LONGEST),
                     st.floats(0.0, 0.5))


def sample(probe: str, is_open: Open, how: Probing, until: float) -> list[Sample]:
    """What the Monitor records for one probe against a system whose access is ``is_open(t)``."""
    found = []
    next_at = t = 0.0
    while t < until:
        took = how.longest if how.draw.random() < how.stalls else how.draw.uniform(0.001, how.longest)
        end = t + took
        decided = t + how.draw.random() * took
        found.append(Sample(t, end, probe, "ok" if is_open(decided) else "http_403", ""))
        next_at += PERIOD
        t = max(end, next_at)
    return found


def judge(is_open: Open, restored_at: float, vault: Probing, mesh: Probing) -> Timeline:
    until = restored_at + RECOVERY_BOUND_S
    return Timeline(
        scenario="policy-revocation", platform="synthetic", must_fail=("vault",), zero_failures=False,
        tolerance_s=TOLERANCE_S, recovery_bound_s=RECOVERY_BOUND_S,
        samples=sorted(sample("vault", is_open, vault, until) + sample("mesh", lambda _: True, mesh, until),
                       key=lambda s: s.t),
        fault_at=FAULT_AT, restored_at=restored_at, expected_fail_closed_at=FAULT_AT + EXPECTED_S,
        fault_took_effect=True, steady_again=True)


# The harness restores once it saw CONVERGE failures in a row: the window holds at least that many samples.
HOLD = st.floats(CONVERGE * RESOLUTION + 0.1, 8.0)


@settings(max_examples=300, deadline=None)
@given(closes_after=st.floats(0.0, EXPECTED_S), hold=HOLD, reopens_after=st.floats(0.0, 3.0),
       vault=probing(), mesh=probing())
def test_failing_closed_in_time_and_recovering_passes_whatever_the_probes_took(
        closes_after: float, hold: float, reopens_after: float, vault: Probing, mesh: Probing) -> None:
    closed_at = FAULT_AT + closes_after
    restored_at = closed_at + hold
    timeline = judge(lambda t: t < closed_at or t >= restored_at + reopens_after, restored_at, vault, mesh)
    assert timeline.verdict == "passed", (timeline.time_to_fail_closed_s, timeline.violations,
                                          timeline.time_to_recover_s)
    assert timeline.time_to_fail_closed_s is not None
    # The figure is the system's own moment, to within one sampling interval.
    assert closes_after - LONGEST <= timeline.time_to_fail_closed_s <= closes_after + RESOLUTION


@settings(max_examples=200, deadline=None)
@given(restored_after=st.floats(1.0, 8.0), vault=probing(), mesh=probing())
def test_never_failing_closed_fails_whatever_the_probes_took(
        restored_after: float, vault: Probing, mesh: Probing) -> None:
    timeline = judge(lambda _: True, FAULT_AT + restored_after, vault, mesh)
    assert timeline.verdict == "failed"
    assert timeline.time_to_fail_closed_s is None


@settings(max_examples=200, deadline=None)
@given(late_by=st.floats(RESOLUTION + 0.01, 4.0), hold=HOLD, vault=probing(), mesh=probing())
def test_failing_closed_too_late_fails_whatever_the_probes_took(
        late_by: float, hold: float, vault: Probing, mesh: Probing) -> None:
    closed_at = FAULT_AT + EXPECTED_S + TOLERANCE_S + late_by
    restored_at = closed_at + hold
    timeline = judge(lambda t: t < closed_at or t >= restored_at, restored_at, vault, mesh)
    assert timeline.verdict == "failed"


@settings(max_examples=200, deadline=None)
@given(reopen_after=st.floats(0.0, 2.0), reopen_for=st.floats(2 * RESOLUTION, 3.0), hold=HOLD,
       vault=probing(), mesh=probing())
def test_reopening_after_the_deadline_is_a_violation_whatever_the_probes_took(
        reopen_after: float, reopen_for: float, hold: float, vault: Probing, mesh: Probing) -> None:
    closed_at = FAULT_AT + EXPECTED_S / 2
    reopened_at = FAULT_AT + EXPECTED_S + TOLERANCE_S + reopen_after
    closed_again = reopened_at + reopen_for
    restored_at = closed_again + hold

    def is_open(t: float) -> bool:
        return t < closed_at or reopened_at <= t < closed_again or t >= restored_at

    timeline = judge(is_open, restored_at, vault, mesh)
    assert timeline.verdict == "failed"
    assert timeline.violations, "a success inside the reopened span went unseen"
