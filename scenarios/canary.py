"""Istio's canary upgrade watched by the Monitor: a second control-plane revision takes the mesh over
namespace by namespace (istio.io "Canary upgrades"), or is rolled back, while calls go on.

The platform does each step (cluster.platform.Canary); this module orders them, keeps the phases on
the monitor's clock, captures the server's wire while the mesh runs mixed (the server's proxy on the
new revision, the client's on the old), and asks a principal of another namespace to call the server
then. Verdicts come from what the probes, the wire and the control planes said.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cluster.agent import APP_PORT
from cluster.platform import CallResult, Canary, Capture, Platform, Workload
from cluster.wait import wait_until
from scenarios.monitor import Monitor, Sample, mesh_probe, vault_probe
from scenarios.upgrade import CANARY_PREFIX, PROBES, SETTLED, wire_problems

DEFAULT = "default"
MIXED_CALLS = 2 * SETTLED  # successful calls the mixed phase's capture must see


@dataclass(frozen=True)
class Phase:
    name: str
    started: float  # seconds on the monitor's clock
    done: float


@dataclass(frozen=True)
class CanaryRun:
    """What happened: every sample, the phases, the mixed phase's wire and foreign call, and who served whom."""

    samples: tuple[Sample, ...]
    phases: tuple[Phase, ...]
    mixed_wire: Capture
    mixed_calls: int  # successful mesh calls while the mixed phase's capture ran
    mixed_server: str  # ip:port the mesh probe called then (the server's new pod)
    foreign: CallResult  # a principal of another namespace calling the server in the mixed phase
    serving: dict[str, str] = field(default_factory=dict)  # "<moment> <workload>" -> the revision serving it
    revisions_after: tuple[str, ...] = ()

    def failed(self, probe: str) -> list[Sample]:
        return [s for s in self.samples if s.probe == probe and not s.ok]

    def of(self, probe: str) -> list[Sample]:
        return [s for s in self.samples if s.probe == probe]


def serving(canary: Canary, workload: Workload, expected: str) -> str:
    """The revision observed serving ``workload``'s proxy, once exactly one istiod lists it and it is ``expected``;
    WaitTimeout naming what was seen otherwise (a restarted proxy connects once, as it starts)."""
    def check() -> str:
        observed = canary.serving_revision(workload)
        return observed if observed == expected else ""

    return wait_until(check, timeout=30, interval=0.2,
                      describe=f"{workload.namespace}/{workload.name}'s proxy to be served by revision {expected}")


def _wait_calls(monitor: Monitor, since: float, count: int) -> None:
    wait_until(lambda: len([s for s in monitor.recent("mesh", 10**6, since) if s.ok]) >= count, timeout=60,
               describe=f"{count} successful mesh calls in the mixed phase")


class _Phases:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.done: list[Phase] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = self.monitor.now()
        yield
        self.done.append(Phase(name, started, self.monitor.now()))


def run_canary(platform: Platform, client: Workload, server: Workload, foreign: Workload, *, revision: str,
               rollback: bool, hz: float = 6.0, settle_timeout: float = 120.0,
               progress: Callable[[str], None] = lambda _: None) -> CanaryRun:
    """Client and server share a namespace; ``foreign`` is a meshed workload of another. Forward: install
    ``revision``, move the app namespace and restart the server (mixed: its proxy on ``revision``, the
    client's on the default), capture that, restart the client, move the foreign namespace, remove the
    default. ``rollback``: after the mixed phase and the client, move the app namespace back, restart
    both, and remove ``revision``. Raises WaitTimeout when the probes do not settle, before or after."""
    canary = platform.canary()
    seen: dict[str, str] = {}
    monitor = Monitor({"mesh": mesh_probe(platform, client, server), "vault": vault_probe(platform, client)}, hz=hz)
    with monitor:
        phase = _Phases(monitor)
        wait_until(lambda: monitor.all_recent(PROBES, SETTLED, outcome_ok=True), timeout=settle_timeout,
                   describe="mesh calls and Vault reads to succeed before the canary")
        with phase("install"):
            progress(f"installing revision {revision}")
            canary.install_revision(revision)
        with phase("server"):
            canary.move_namespace(server.namespace, revision)
            server = canary.restart(server)
            seen["mixed server"] = serving(canary, server, revision)
            seen["mixed client"] = serving(canary, client, DEFAULT)
            seen["mixed server injected by"] = canary.injected_by(server)
        with phase("mixed"), platform.capture(server) as wire:
            mixed_server = f"{server.ip}:{APP_PORT}"
            since = monitor.now()
            _wait_calls(monitor, since, MIXED_CALLS)
            foreign_answer = platform.call(foreign, server, canary=f"{CANARY_PREFIX}{secrets.token_hex(6)}",
                                           timeout=5)
            mixed_calls = len([s for s in monitor.recent("mesh", 10**6, since) if s.ok])
        with phase("client"):
            client = canary.restart(client)
            seen["moved client"] = serving(canary, client, revision)
        if rollback:
            with phase("rollback"):
                canary.move_namespace(server.namespace, DEFAULT)
                server = canary.restart(server)
                client = canary.restart(client)
                seen["back server"] = serving(canary, server, DEFAULT)
                seen["back client"] = serving(canary, client, DEFAULT)
            with phase("remove"):
                canary.remove_revision(revision)
        else:
            with phase("foreign"):
                canary.move_namespace(foreign.namespace, revision)
                foreign = canary.restart(foreign)
                seen["moved foreign"] = serving(canary, foreign, revision)
            with phase("remove"):
                canary.remove_revision(DEFAULT)
        done = monitor.now()
        wait_until(lambda: monitor.all_recent(PROBES, SETTLED, outcome_ok=True, since=done), timeout=settle_timeout,
                   describe="mesh calls and Vault reads to succeed after the canary")
        final = DEFAULT if rollback else revision
        for name, workload in (("server", server), ("client", client)):
            seen[f"after {name}"] = serving(canary, workload, final)
        samples = tuple(monitor.samples)
    return CanaryRun(samples, tuple(phase.done), wire, mixed_calls, mixed_server, foreign_answer, seen,
                     canary.revisions())


def mixed_wire_problems(run: CanaryRun) -> list[str]:
    """Why the mixed phase's wire does not show mTLS for its calls ([] when it does; see wire_problems)."""
    return wire_problems(run.mixed_wire, run.mixed_server, run.mixed_calls)
