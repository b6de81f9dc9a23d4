"""Ctrl-C that cannot be lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when
the signal arrives. If that is inside a ``weakref.finalize`` callback, a
``__del__`` or any other code the interpreter runs "unraisably", CPython
prints "Exception ignored in ..." and carries on: the interrupt is gone
(``PyErr_WriteUnraisable`` in ``Python/errors.c``). A CI run saw exactly that:
SIGINT landed in a finalizer during an OpenBao upgrade, the run went on to
pass, and exited 0 instead of pytest's 2.

``watching_lost()`` notes every KeyboardInterrupt reported as unraisable;
``raise_if_lost()`` raises it again at the next safe point. The safe points
are the one waiting primitive (``cluster.wait.pause``) and the test hooks, so a
lost Ctrl-C comes back within one poll interval. Only lost interrupts are
raised again: one that propagated normally is never raised a second time
while its cleanup runs.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_lost: list[str] = []
_lock = threading.Lock()


def note_if_interrupt(unraisable: Any) -> None:
    """Remember a KeyboardInterrupt that the interpreter could not raise. ``unraisable`` is
    what ``sys.unraisablehook`` receives (it has ``exc_value``)."""
    value = getattr(unraisable, "exc_value", None)
    if isinstance(value, KeyboardInterrupt):
        with _lock:
            _lost.append(str(value) or "KeyboardInterrupt")


def lost() -> bool:
    """True while an interrupt that was swallowed has not been raised again."""
    return bool(_lost)


def consume_lost() -> bool:
    """Forget a swallowed interrupt, returning whether there was one: for a caller that is about
    to do what the interrupt would have started (the session's teardown)."""
    with _lock:
        had = bool(_lost)
        _lost.clear()
    return had


def raise_if_lost() -> None:
    """Raise KeyboardInterrupt again if one was swallowed, in the main thread only (where
    Python delivers signals). Raises: KeyboardInterrupt, naming where it was first lost."""
    if not _lost or threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        what = _lost[0]
        _lost.clear()
    raise KeyboardInterrupt(f"{what} (raised again: it had been swallowed by an unraisable context)")


@contextmanager
def watching_lost() -> Iterator[None]:
    """Chain onto ``sys.unraisablehook`` for the duration; the hook that was there still gets
    every report. Restores it afterwards, and forgets anything still pending."""
    previous: Callable[[Any], object] = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        note_if_interrupt(unraisable)
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        if sys.unraisablehook is hook:
            sys.unraisablehook = previous
        with _lock:
            _lost.clear()


def raise_keyboard_interrupt_on_sigterm() -> None:
    """Make SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C, so that every context
    manager tears down. What no handler can catch (SIGKILL) the run's janitor reaps."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


_PR_SET_PDEATHSIG = 1  # prctl(2)


def terminate_with_parent() -> None:
    """For ``preexec_fn``: the kernel sends the child SIGTERM when the process that started it dies (prctl(2)
    PR_SET_PDEATHSIG), so a SIGKILLed pytest takes its children along."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
