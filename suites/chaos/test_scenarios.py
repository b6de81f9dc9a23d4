"""Chaos: each scenario breaks one thing on purpose and proves, from the timeline,
that access failed closed and recovered, within bounds, with mTLS on the wire."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cluster.platform import Platform, Workload
from cluster.settings import Settings
from cluster.tenancy import Tenant
from cluster.wait import wait_until
from reports import attach
from scenarios.bounds import ScenarioConfigError, check_possible, inapplicable
from scenarios.faults import CLUSTER_WIDE, FAULTS, make_fault
from scenarios.monitor import OK
from scenarios.scenario import Stage, run_scenario
from scenarios.timeline import Timeline

pytestmark = pytest.mark.chaos


def _established_mtls_outlived_the_fault(timeline: Timeline) -> None:
    """Vault sealed or down: calls kept working until the certificates expired."""
    assert timeline.fault_at is not None and timeline.expected_fail_closed_at is not None
    # A success proves the mesh open somewhere in [t, end]: its start is the moment that is surely after.
    last_ok = max((s.t for s in timeline.samples if s.probe == "mesh" and s.ok and s.t >= timeline.fault_at),
                  default=None)
    assert last_ok is not None, "no successful mesh call after the fault: mTLS broke at once"
    assert last_ok >= timeline.expected_fail_closed_at - timeline.tolerance_s - 1, (
        f"mesh calls stopped at t={last_ok}, before the certificates expired at t={timeline.expected_fail_closed_at}")


def _old_chain_refused(timeline: Timeline) -> None:
    evidence = timeline.fault_evidence
    assert "was accepted during the overlap" in evidence, evidence
    assert "and refused" in evidence, evidence


def _ca_reported_403(timeline: Timeline) -> None:
    assert "403" in timeline.fault_evidence, timeline.fault_evidence


EXTRA_CHECKS: dict[str, Callable[[Timeline], None]] = {
    "vault-seal": _established_mtls_outlived_the_fault,
    "vault-down": _established_mtls_outlived_the_fault,
    "root-rotation": _old_chain_refused,
    "mesh-ca-vault-access-lost": _ca_reported_403,
}

SCENARIOS = [pytest.param(scenario_id, id=scenario_id,
                          marks=[pytest.mark.cluster_fault] if scenario_id in CLUSTER_WIDE else [])
             for scenario_id in FAULTS]


@pytest.fixture
def stage(platform: Platform, settings: Settings, new_tenant: Callable[..., Tenant],
          deploy: Callable[..., Workload], request: pytest.FixtureRequest) -> tuple[Stage, Tenant]:
    scenario_id = request.node.callspec.params["scenario_id"]
    if reason := inapplicable(scenario_id, settings.profile, platform.name):
        pytest.skip(reason)
    # An impossible bound is a configuration error (an ERROR at setup), never a false product failure.
    try:
        check_possible(scenario_id, settings.profile)
    except ScenarioConfigError as err:
        pytest.fail(f"configuration error: {err}", pytrace=False)
    tenant = new_tenant("client", "server")
    server = deploy(tenant, "server", "server")
    client = deploy(tenant, "client", "client")
    wait_until(lambda: platform.read_vault(client).ok, timeout=15, describe="the client's first Vault read")
    return Stage(platform, client, server, settings.profile.policy, settings.run_report_dir, phase=attach.step), tenant


@pytest.mark.parametrize("scenario_id", SCENARIOS)
def test_chaos(scenario_id: str, stage: tuple[Stage, Tenant]) -> None:
    scene, tenant = stage
    fault = make_fault(scenario_id, scene.platform, tenant, scene.client, scene.server)
    timeline = run_scenario(scene, fault)
    attach.timeline(timeline.as_json())
    where = f"timeline {scene.run_dir}/timelines/{scenario_id}.json"
    # 1. The fault took effect.
    assert timeline.fault_took_effect, f"{timeline.fault_evidence} ({where})"
    # 2. Access failed closed within the bound.
    if not timeline.zero_failures:
        assert timeline.time_to_fail_closed_s is not None, f"access never failed closed ({where})"
        assert timeline.expected_fail_closed_s is not None
        assert timeline.time_to_fail_closed_s <= timeline.expected_fail_closed_s + timeline.tolerance_s, (
            f"failed closed after {timeline.time_to_fail_closed_s}s, bound {timeline.expected_fail_closed_s}s "
            f"+ {timeline.tolerance_s}s ({where})")
    # 3. No violations: no plaintext, no success after the fail-closed moment, no failure where none may be.
    assert timeline.violations == [], where
    # 4. Access recovered within the bound, with at least 3 successes in a row.
    assert timeline.time_to_recover_s is not None, f"access never recovered ({where})"
    assert timeline.time_to_recover_s <= timeline.recovery_bound_s, where
    # 5. The steady state is back, with mTLS on the wire.
    assert timeline.steady_again, f"{timeline.steady_evidence} ({where})"
    # 6. The refusal it expects is in Prometheus, inside the fault window, and its alert fired.
    if timeline.audit is not None and timeline.audit["checked"]:
        assert timeline.audit["proven"], f"{timeline.audit['detail']} ({where})"
    if scenario_id in EXTRA_CHECKS:
        EXTRA_CHECKS[scenario_id](timeline)
    if scenario_id == "role-policy-detach":
        # The revocation latency measured: a detached policy stopped the running token within the ceiling.
        ceiling = scene.policy.max_revocation_latency.total_seconds()
        assert timeline.time_to_fail_closed_s is not None and timeline.time_to_fail_closed_s <= ceiling, (
            f"the running token kept access {timeline.time_to_fail_closed_s}s after its policy was detached, "
            f"above policy.max_revocation_latency {ceiling:g}s ({where})")
    assert timeline.verdict == "passed"
    assert {s.outcome for s in timeline.samples} & {OK}
