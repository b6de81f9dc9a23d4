from __future__ import annotations

import pytest

from cluster.errors import WaitTimeout
from cluster.wait import Abort, wait_until
from tests.fakeclock import FakeClock


def test_returns_the_first_truthy_value() -> None:
    values = iter([0, 0, "ready"])
    clock = FakeClock()
    found = wait_until(lambda: next(values), timeout=5, describe="x", clock=clock, between_polls=clock.advance)
    assert found == "ready"
    assert clock.now == pytest.approx(0.2)


def test_converge_needs_successes_in_a_row() -> None:
    values = iter([1, 0, 1, 1, 1, 0])
    clock = FakeClock()
    wait_until(lambda: next(values), timeout=5, converge=3, describe="x", clock=clock, between_polls=clock.advance)
    assert clock.now == pytest.approx(0.4)


def test_timeout_reports_attempts_elapsed_and_last_state_and_error() -> None:
    calls = iter([ValueError("boom"), "half", None])
    clock = FakeClock()

    def check() -> object:
        item = next(calls, None)
        if isinstance(item, Exception):
            raise item
        return item if item != "half" else ""

    with pytest.raises(WaitTimeout) as raised:
        wait_until(check, timeout=1.0, interval=0.25, describe="the thing", clock=clock, between_polls=clock.advance)
    err = raised.value
    assert err.attempts == 5
    assert err.elapsed == pytest.approx(1.0)
    assert err.last_error == "ValueError: boom"
    assert "the thing" in str(err) and "5 attempts" in str(err) and "ValueError: boom" in str(err)


def test_abort_stops_waiting_at_once() -> None:
    clock = FakeClock()

    def check() -> bool:
        raise Abort("process exited")

    with pytest.raises(Abort):
        wait_until(check, timeout=10, describe="x", clock=clock, between_polls=clock.advance)
    assert clock.now == 0


@pytest.mark.parametrize("kwargs", [{"timeout": 0}, {"timeout": 1, "converge": 0}])
def test_rejects_nonsense_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        wait_until(lambda: True, describe="x", **kwargs)  # type: ignore[arg-type]
