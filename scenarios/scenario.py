"""Run one chaos scenario through its fixed phases and produce its timeline.

1. steady state  2. inject  3. expect fail closed (bound)  4. restore
5. expect recovery (bound)  6. steady state again, with mTLS on the wire.

The restore always happens: in ``finally``, which also runs on Ctrl-C and
SIGTERM (the session turns SIGTERM into KeyboardInterrupt). A restore that
fails is re-raised after the timeline is written, so its test fails loudly.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cluster.agent import APP_PORT
from cluster.errors import PlatformUnavailable, WaitTimeout
from cluster.platform import Platform, Workload
from cluster.profile import Policy
from cluster.progress import say
from cluster.vault import hmaced_login_keys
from cluster.wait import wait_until
from scenarios.bounds import EFFECT_TIMEOUT_S, MONITOR_HZ
from scenarios.evidence import Bounds, ExpectedDenial, Window, prove
from scenarios.monitor import Monitor, mesh_probe, vault_probe
from scenarios.timeline import CONVERGE, Timeline

PROBES = ("mesh", "vault")


class Fault(Protocol):
    id: str

    @property
    def must_fail(self) -> tuple[str, ...]:
        """The probes that must fail closed ("mesh", "vault")."""

    @property
    def zero_failures(self) -> bool:
        """True where the scenario must not fail a single request (the rotations)."""

    def inject(self) -> None:
        """Break something on purpose."""

    def took_effect(self) -> str:
        """Evidence that the fault is real (Vault reports the role gone, ...); '' while not yet."""

    def fail_closed_in(self) -> float | None:
        """Seconds from now until access must have failed closed (None for zero-failure scenarios)."""

    def restore(self) -> None:
        """Undo the fault (a no-op where the system heals itself, which recovery then proves)."""

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        """The refusal Vault's audit log must show during the fault (None where Vault refuses nothing, or
        audits nothing: sealed or down)."""


@dataclass(frozen=True)
class Stage:
    """The workloads a scenario runs against: client calls server; client also reads Vault."""

    platform: Platform
    client: Workload
    server: Workload
    policy: Policy
    run_dir: Path
    # Wraps each phase; the chaos suite passes Allure's step (reports/ stays out of scenarios/).
    phase: Callable[[str], AbstractContextManager[object]] = lambda title: contextlib.nullcontext()


def _wait(check: Callable[[], object], timeout: float, describe: str) -> bool:
    return _wait_saying(check, timeout, describe)[0]


def _wait_saying(check: Callable[[], object], timeout: float, describe: str) -> tuple[bool, str]:
    """Whether ``check`` came true in time; if not, what its last try saw (its error, or its last answer)."""
    try:
        wait_until(check, timeout=timeout, interval=0.1, describe=describe)
    except WaitTimeout as err:
        return False, err.last_error or f"last answer {err.last_state!r}"
    return True, ""


def steady_with_mtls(stage: Stage, calls: int = 5) -> tuple[bool, str]:
    """Calls succeed, and the wire between the pods shows TLS only and never a canary."""
    probes = [f"tg-canary-{secrets.token_hex(8)}" for _ in range(calls)]
    with stage.platform.capture(stage.server) as wire:
        results = [stage.platform.call(stage.client, stage.server, canary=p, timeout=5) for p in probes]
    statuses = [r.status for r in results]
    leaked = [p for p in probes if wire.contains(p)]
    seen = wire.requests_to(f"{stage.server.ip}:{APP_PORT}")  # Envoy pools connections: count requests
    ok = statuses == [200] * calls and seen >= calls and not wire.plaintext_flows and not leaked
    return ok, (f"{calls} calls {statuses}; {seen} requests and {len(wire.flows)} flows on the wire, "
                f"{len(wire.plaintext_flows)} plaintext, canaries leaked: {len(leaked)}")


def run_scenario(stage: Stage, fault: Fault, *, hold_s: float = 2.0) -> Timeline:
    policy = stage.policy
    timeline = Timeline(
        scenario=fault.id, platform=stage.platform.name, must_fail=fault.must_fail,
        zero_failures=fault.zero_failures, tolerance_s=policy.fail_closed_tolerance.total_seconds(),
        recovery_bound_s=policy.recovery_bound.total_seconds(),
    )
    probes = {"mesh": mesh_probe(stage.platform, stage.client, stage.server),
              "vault": vault_probe(stage.platform, stage.client)}
    monitor = Monitor(probes, hz=MONITOR_HZ)
    try:
        with monitor:
            timeline.wall_t0 = time.time() - monitor.now()
            _phases(stage, fault, monitor, timeline, hold_s)
        if timeline.restored_at is not None and not timeline.notes:
            with stage.phase("6. steady state again, with mTLS on the wire"):
                timeline.steady_again, timeline.steady_evidence = steady_with_mtls(stage)
        expected = fault.expected_denial
        if expected is not None and not (timeline.fault_took_effect and timeline.restored_at is not None):
            timeline.audit = {"checked": False, "detail": f"{expected.describe()}: not asked, the fault did not "
                                                          "take effect"}
        elif expected is not None:
            with stage.phase(f"7. prove from Prometheus: {expected.describe()}"):
                timeline.audit = audit_evidence(stage, expected, timeline)
    except BaseException as err:
        timeline.notes.append(f"interrupted: {type(err).__name__}: {err}")
        raise
    finally:
        timeline.samples = monitor.samples
        timeline.write(stage.run_dir)
    return timeline


def audit_evidence(stage: Stage, expected: ExpectedDenial, timeline: Timeline) -> dict[str, object]:
    """The expected refusal proven from the platform's Prometheus (scenarios/evidence.py), as the timeline
    keeps it; where the platform has no Prometheus, why it was not checked and how to have it checked."""
    try:
        url = stage.platform.prometheus_url()
    except PlatformUnavailable as err:
        return {"checked": False, "detail": str(err)}
    mount = stage.platform.vault_layout.kubernetes_path
    if expected.login and (hmaced := hmaced_login_keys(stage.platform.vault_admin(), mount)):
        # An existing cluster's mount, left as it is: its refused logins name neither role nor reason.
        return {"checked": False, "detail": f"{expected.describe()}: auth/{mount} HMACs {', '.join(hmaced)} in the "
                                            "audit log, so a refused login says neither whose nor why; fix: vault "
                                            f"auth tune -audit-non-hmac-request-keys=role "
                                            f"-audit-non-hmac-response-keys=error {mount}/"}
    assert timeline.fault_at is not None and timeline.restored_at is not None
    window = Window(timeline.wall_t0 + timeline.fault_at, timeline.wall_t0 + timeline.restored_at)
    bounds = Bounds.from_policy(stage.policy)
    say(f"{timeline.scenario}: asking Prometheus for {expected.describe()}")
    return {"checked": True, **prove(url, expected, window, bounds).as_json()}


def _phases(stage: Stage, fault: Fault, monitor: Monitor, timeline: Timeline, hold_s: float) -> None:
    with stage.phase("1. steady state: every probe succeeds"):
        if not _wait(lambda: monitor.all_recent(PROBES, CONVERGE, True), 20, "steady state"):
            timeline.notes.append("steady state not reached before the fault: not injected")
            return
    timeline.fault_at = monitor.now()
    try:
        with stage.phase(f"2. inject {fault.id} and wait for evidence that it took effect"):
            fault.inject()
            evidence: list[str] = []

            def effect() -> bool:
                found = fault.took_effect()
                if found:
                    evidence.append(found)
                return bool(found)

            say(f"{fault.id}: injected; waiting up to {EFFECT_TIMEOUT_S:g} s for evidence that it took effect")
            timeline.fault_took_effect, last = _wait_saying(effect, EFFECT_TIMEOUT_S, f"{fault.id} to take effect")
            timeline.fault_evidence = evidence[-1] if evidence else (
                f"no evidence that the fault took effect within {EFFECT_TIMEOUT_S:g} s (the last check: {last})")
        bound = fault.fail_closed_in() if timeline.fault_took_effect else None
        if bound is not None:
            with stage.phase(f"3. expect access to fail closed within {bound:.1f} s + {timeline.tolerance_s:g} s"):
                timeline.expected_fail_closed_at = round(monitor.now() + bound, 3)
                fault_at = timeline.fault_at
                say(f"{fault.id}: waiting up to {bound + timeline.tolerance_s:.0f} s for access to fail closed "
                    f"(until the certificates or tokens it depends on run out)")
                _wait(lambda: monitor.all_recent(fault.must_fail, CONVERGE, False, since=fault_at),
                      bound + timeline.tolerance_s + 5, "access to fail closed")
        else:
            with stage.phase(f"3. hold {hold_s:g} s under the fault: no request may fail"):
                hold_until = monitor.now() + hold_s
                _wait(lambda: monitor.now() >= hold_until, hold_s + 1, "the hold after the fault")
    finally:
        # Always restore, also on Ctrl-C and SIGTERM; a failed restore fails the test loudly.
        timeline.restored_at = monitor.now()
        with stage.phase(f"4. restore after {fault.id}"):
            try:
                fault.restore()
            except BaseException as err:
                timeline.notes.append(f"restore failed: {type(err).__name__}: {err}")
                raise
    restored_at = timeline.restored_at
    with stage.phase(f"5. expect recovery within {timeline.recovery_bound_s:g} s ({CONVERGE} successes in a row)"):
        say(f"{fault.id}: restored; waiting up to {timeline.recovery_bound_s:.0f} s for recovery")
        _wait(lambda: monitor.all_recent(PROBES, CONVERGE, True, since=restored_at),
              timeline.recovery_bound_s + 5, "recovery")
