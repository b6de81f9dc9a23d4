"""The Monitor: samples mesh calls and Vault reads through the workloads, continuously.

Each probe runs in its own thread at ``hz`` or more, so a slow or hanging
probe (Vault down) never starves the other one. Every sample is kept, with
the interval it took: when the probe started and when its answer came back.
The system decided the outcome at some moment inside that interval, and
nothing tells which; scenarios/timeline.py judges samples by that rule.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster.platform import Platform, Workload

Probe = Callable[[], tuple[str, str]]
OK = "ok"
PLAINTEXT = "plaintext"


@dataclass(frozen=True)
class Sample:
    """One probe: started at ``t``, answered at ``end`` (seconds on the monitor's clock, t <= end).

    A success proves access was open at some moment in [t, end]; a failure, that it was closed.
    """

    t: float
    end: float
    probe: str
    outcome: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome == OK


def mesh_probe(platform: Platform, client: Workload, server: Workload) -> Probe:
    """A call through both sidecars. A 200 without both SPIFFE IDs in XFCC crossed in plaintext."""

    def probe() -> tuple[str, str]:
        result = platform.call(client, server, canary=f"tg-canary-{secrets.token_hex(6)}", timeout=2)
        if result.status == 200:
            return (OK, "") if len(result.peer_ids) == 2 else (PLAINTEXT, "200 without XFCC")
        return result.error or f"http_{result.status}", (result.detail or "")[:200]

    return probe


def vault_probe(platform: Platform, app: Workload) -> Probe:
    """The app reads its namespace's secret now, with its agent's current token."""

    def probe() -> tuple[str, str]:
        answer = platform.read_vault(app)
        if answer.ok:
            return OK, ""
        error = answer.error
        for marker, outcome in (("403", "http_403"), ("503", "http_5xx"), ("not logged in", "no_token"),
                                ("refused", "refused"), ("reset", "reset"), ("timeout", "timeout")):
            if marker in error:
                return outcome, error[:200]
        return "other", error[:200]

    return probe


class Monitor:
    """Runs probes until stopped; ``mark`` records scenario moments on the same clock."""

    def __init__(self, probes: dict[str, Probe], *, hz: float = 6.0) -> None:
        self.probes = probes
        self.period = 1.0 / hz
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name, probe), daemon=True, name=f"probe-{name}")
                         for name, probe in probes.items()]
        self._t0 = 0.0

    def now(self) -> float:
        return time.monotonic() - self._t0

    def _run(self, name: str, probe: Probe) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            started = self.now()
            try:
                outcome, detail = probe()
            except Exception as err:  # noqa: BLE001 - a probe that raises is a failed sample, never a gap
                outcome, detail = "other", f"{type(err).__name__}: {err}"[:200]
            ended = self.now()
            # Milliseconds, rounded outwards: the recorded interval always contains the real one.
            sample = Sample(math.floor(started * 1000) / 1000, math.ceil(ended * 1000) / 1000, name, outcome, detail)
            with self._lock:
                self._samples.append(sample)
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Monitor:
        self._t0 = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    @property
    def samples(self) -> list[Sample]:
        with self._lock:
            return sorted(self._samples, key=lambda s: s.t)

    def recent(self, probe: str, count: int, since: float = 0.0) -> list[Sample]:
        """The last ``count`` samples of ``probe`` that started at or after ``since``."""
        return [s for s in self.samples if s.probe == probe and s.t >= since][-count:]

    def all_recent(self, probes: tuple[str, ...], count: int, outcome_ok: bool, since: float = 0.0) -> bool:
        """Whether the last ``count`` samples (taken after ``since``) of every probe are ok (or all failed)."""
        for name in probes:
            recent = self.recent(name, count, since)
            if len(recent) < count or any(s.ok != outcome_ok for s in recent):
                return False
        return True
