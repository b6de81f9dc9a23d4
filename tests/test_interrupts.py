"""A Ctrl-C that lands where Python cannot raise it (a finalizer) is raised again, not lost.

The CI run this comes from: SIGINT reached pytest inside a ``weakref.finalize``
callback during an OpenBao upgrade; CPython printed "Exception ignored" and the
run went on to pass, exit 0, with the upgrade's platform still up for 90 s.
"""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import pytest

from cluster import interrupts
from cluster.wait import pause, wait_until
from tests.lifecycle import run_pytest

# The swallowed interrupts below are on purpose; pytest would report each as a warning.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


class _Held:
    pass


def _lose(message: str = "landed in a finalizer") -> None:
    def finalizer() -> None:
        raise KeyboardInterrupt(message)

    held = _Held()
    weakref.finalize(held, finalizer)
    del held
    gc.collect()


def test_a_swallowed_interrupt_comes_back_at_the_next_poll() -> None:
    with interrupts.watching_lost():
        _lose()
        assert interrupts.lost()
        with pytest.raises(KeyboardInterrupt, match="landed in a finalizer"):
            wait_until(lambda: False, timeout=60, interval=0.01, describe="never")
        assert not interrupts.lost()
        pause(0.0)  # raised once, not again


def test_an_interrupt_that_propagated_is_never_raised_twice() -> None:
    with interrupts.watching_lost():
        with pytest.raises(KeyboardInterrupt):
            raise KeyboardInterrupt
        assert not interrupts.lost()
        pause(0.0)


def test_the_previous_hook_still_sees_every_report_and_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with interrupts.watching_lost():
        _lose()
        assert [type(report.exc_value) for report in seen] == [KeyboardInterrupt]
        assert interrupts.consume_lost()
        assert not interrupts.consume_lost()
    assert sys.unraisablehook == seen.append


def test_other_unraisable_errors_are_not_interrupts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "unraisablehook", lambda report: None)
    with interrupts.watching_lost():
        def finalizer() -> None:
            raise RuntimeError("an ordinary finalizer bug")

        held = _Held()
        weakref.finalize(held, finalizer)
        del held
        gc.collect()
        assert not interrupts.lost()


def test_leaving_the_watch_forgets_what_is_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "unraisablehook", lambda report: None)
    with interrupts.watching_lost():
        _lose()
    assert not interrupts.lost()
    pause(0.0)


@pytest.mark.parametrize("test", ["test_lost_while_polling", "test_lost_where_nothing_polls"])
def test_a_pytest_run_that_loses_ctrl_c_ends_interrupted(test: str) -> None:
    """The session's hooks: exit code 2 (pytest's "interrupted"), the test after it never runs, and the
    two-minute wait in the first case does not run out."""
    result = run_pytest("tests/children/lost_interrupt.py", "-k", f"{test} or test_never_runs", "-v",
                        timeout=90)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "raised again" in output, output
    assert "test_never_runs PASSED" not in output and "test_never_runs FAILED" not in output, output
