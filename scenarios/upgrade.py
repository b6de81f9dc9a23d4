"""An upgrade watched by the Monitor: mesh calls and Vault reads through the workloads, and the wire.

The upgrade itself is the platform's (cluster.platform.Upgrades); this module only runs it between
two settled stretches of probes and keeps what the system did, on the monitor's clock. Verdicts
depend on what the probes saw, never on how long the harness took: every figure is measured
from samples, and a sample is judged by its own interval (scenarios/monitor.py).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cluster.agent import APP_PORT
from cluster.platform import Capture, Platform, VaultUpgradeStep, Workload
from cluster.wait import wait_until
from scenarios.monitor import Monitor, Sample, mesh_probe, vault_probe

PROBES = ("mesh", "vault")
CANARY_PREFIX = "tg-canary-"  # every mesh probe carries one (scenarios/monitor.py mesh_probe)
SETTLED = 5  # successes in a row, per probe, that count as "serving"

Upgrade = Callable[[Callable[[], float]], Sequence[VaultUpgradeStep]]


@dataclass(frozen=True)
class Watched:
    """Every sample, each node's step, when the upgrade ran (monitor clock, seconds), and the server's wire."""

    samples: tuple[Sample, ...]
    steps: tuple[VaultUpgradeStep, ...]
    started: float
    done: float
    wire: Capture
    server_address: str  # ip:port the mesh probe calls

    def during(self, probe: str) -> list[Sample]:
        """``probe``'s samples that started once the upgrade had (reads had settled before it)."""
        return [s for s in self.samples if s.probe == probe and s.t >= self.started]

    def of(self, probe: str) -> list[Sample]:
        """All of ``probe``'s samples, the settled ones before the upgrade among them."""
        return [s for s in self.samples if s.probe == probe]

    def failed(self, probe: str) -> list[Sample]:
        return [s for s in self.during(probe) if not s.ok]


def longest_gap(samples: Sequence[Sample]) -> float:
    """The longest time between the answers of two successive successful samples (seconds; nan for < 2)."""
    answers = [s.end for s in samples if s.ok]
    return max((b - a for a, b in itertools.pairwise(answers)), default=math.nan)


def outage(samples: Sequence[Sample]) -> tuple[float, float] | None:
    """The widest window the failures of ``samples`` (one probe's, in order) can have been closed in: from the
    start of the last success before the first failure to the answer of the first success after the last one.
    None when nothing failed; raises ValueError when no success brackets the failures (no recovery seen)."""
    failed = [s for s in samples if not s.ok]
    if not failed:
        return None
    before = [s.t for s in samples if s.ok and s.end <= failed[0].t]
    after = [s.end for s in samples if s.ok and s.t >= failed[-1].end]
    if not before or not after:
        raise ValueError("no success before and after the failures")
    return max(before), min(after)


def _settled(monitor: Monitor, after: float) -> bool:
    return monitor.all_recent(PROBES, SETTLED, outcome_ok=True, since=after)


def _last_seen(monitor: Monitor) -> str:
    latest = {s.probe: s for s in monitor.samples}
    return "; ".join(f"{name}: {s.outcome} {s.detail[:80]}".strip() for name, s in sorted(latest.items()))


def watch_upgrade(platform: Platform, client: Workload, server: Workload, upgrade: Upgrade, *,
                  hz: float = 6.0, settle_timeout: float = 120.0) -> Watched:
    """Probe client -> server through the mesh and the client's Vault reads at ``hz`` (each probe), capture the
    server's wire, wait until both probes settle, run ``upgrade(clock)``, and probe on until both settle again.
    Raises WaitTimeout (with the last samples) when they do not settle within ``settle_timeout`` seconds."""
    monitor = Monitor({"mesh": mesh_probe(platform, client, server), "vault": vault_probe(platform, client)}, hz=hz)
    with platform.capture(server) as wire:
        with monitor:
            wait_until(lambda: _settled(monitor, 0.0), timeout=settle_timeout,
                       describe=f"mesh calls and Vault reads to succeed before the upgrade ({_last_seen(monitor)})")
            started = monitor.now()
            steps = tuple(upgrade(monitor.now))
            done = monitor.now()
            wait_until(lambda: _settled(monitor, done), timeout=settle_timeout,
                       describe=f"mesh calls and Vault reads to succeed after the upgrade ({_last_seen(monitor)})")
        samples = tuple(monitor.samples)
    return Watched(samples, steps, started, done, wire, f"{server.ip}:{APP_PORT}")


def mtls_held(watched: Watched) -> list[str]:
    """Why the wire does not show mTLS throughout ([] when it does), over every successful mesh call (wire_problems)."""
    calls = len([s for s in watched.samples if s.probe == "mesh" and s.ok])
    return wire_problems(watched.wire, watched.server_address, calls)


def wire_problems(wire: Capture, server_address: str, calls: int) -> list[str]:
    """Why a capture does not show mTLS ([] when it does): ``calls`` successful mesh calls to ``server_address``
    (ip:port) crossed it as TLS (at least one TLS record per call), no flow carried plaintext, and no call's canary
    crossed in the clear."""
    problems = []
    seen = wire.requests_to(server_address)
    if seen < calls:
        problems.append(f"{calls} successful calls, only {seen} TLS requests to {server_address}")
    if wire.plaintext_flows:
        problems.append(f"plaintext flows: {list(wire.plaintext_flows)[:3]}")
    if wire.contains(CANARY_PREFIX):
        problems.append("a call's canary crossed the wire in the clear")
    return problems
