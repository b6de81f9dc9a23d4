"""Run only as a child by tests/test_interrupts.py (the name keeps it out of collection).

Each test loses a KeyboardInterrupt the way a CI run did: raised inside a
``weakref.finalize`` callback, where CPython reports it as unraisable and goes on.
"""

from __future__ import annotations

import gc
import weakref

from cluster.wait import wait_until


class _Held:
    pass


def _lose_an_interrupt() -> None:
    def finalizer() -> None:
        raise KeyboardInterrupt("landed in a finalizer")

    held = _Held()
    weakref.finalize(held, finalizer)
    del held
    gc.collect()


def test_lost_while_polling() -> None:
    _lose_an_interrupt()
    wait_until(lambda: False, timeout=120, interval=0.05, describe="something that never happens")


def test_lost_where_nothing_polls() -> None:
    _lose_an_interrupt()


def test_never_runs() -> None:
    raise AssertionError("the run went on after the interrupt")
