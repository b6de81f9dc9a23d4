"""The one waiting helper: deadlines that report what they last saw.

There is no bare sleep anywhere else in cluster/, scenarios/ or suites/.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from cluster.errors import WaitTimeout
from cluster.interrupts import raise_if_lost

T = TypeVar("T")

# A module-level event, never set, gives an interruptible pause that a
# signal handler can cut short by raising; one primitive keeps "no bare
# sleep" easy to check with grep.
_never = threading.Event()


class Abort(Exception):
    """Raised by a check to stop waiting at once: the awaited thing can no longer happen."""


def pause(seconds: float) -> None:
    """Wait a bounded time between polls. Only wait_until and pollers call this.

    Also the safe point where a Ctrl-C that an unraisable context swallowed is raised
    again (cluster.interrupts): every loop of the suite passes through here."""
    raise_if_lost()
    _never.wait(max(0.0, seconds))
    raise_if_lost()


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.1,
    converge: int = 1,
    describe: str,
    clock: Callable[[], float] = time.monotonic,
    between_polls: Callable[[float], None] = pause,
) -> T:
    """Call ``check`` until it returns a truthy value ``converge`` times in a row.

    An exception from ``check`` counts as "not yet" and is remembered, so the
    timeout error can say what went wrong last, which is what a person needs
    at 3 a.m.; ``Abort`` alone ends the wait at once. Returns the last truthy
    value.
    """
    if timeout <= 0 or converge < 1:
        raise ValueError("wait_until needs timeout > 0 and converge >= 1")
    start = clock()
    deadline = start + timeout
    attempts = 0
    streak = 0
    last_state: object = None
    last_error = ""
    while True:
        attempts += 1
        try:
            value = check()
        except Abort:
            raise
        except Exception as err:  # noqa: BLE001 - any failure is "not yet"
            last_error = f"{type(err).__name__}: {err}"
            streak = 0
        else:
            last_state = value
            if value:
                streak += 1
                if streak >= converge:
                    return value
            else:
                streak = 0
        now = clock()
        if now >= deadline:
            raise WaitTimeout(describe, attempts, now - start, last_state, last_error)
        between_polls(min(interval, deadline - now))
