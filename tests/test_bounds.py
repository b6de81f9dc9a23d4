"""A scenario the profile makes impossible is a configuration error naming both values."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.profile import DEFAULT_PROFILE, Profile, load_profile
from scenarios.bounds import ScenarioConfigError, check_possible, inapplicable
from scenarios.faults import FAULTS, UnknownScenario, fault_class


def with_changes(profile: Profile, *, setup: dict[str, Any] | None = None, vault: dict[str, Any] | None = None,
                 mesh: dict[str, Any] | None = None, policy: dict[str, Any] | None = None) -> Profile:
    new_setup = dataclasses.replace(profile.setup, **(setup or {}))
    new_setup = dataclasses.replace(new_setup, vault=dataclasses.replace(new_setup.vault, **(vault or {})),
                                    mesh=dataclasses.replace(new_setup.mesh, **(mesh or {})))
    return dataclasses.replace(profile, setup=new_setup, policy=dataclasses.replace(profile.policy, **(policy or {})))


@pytest.fixture
def default() -> Profile:
    return load_profile(DEFAULT_PROFILE)


def test_the_default_profile_makes_every_scenario_possible(default: Profile) -> None:
    for scenario_id in FAULTS:
        check_possible(scenario_id, default)


@pytest.mark.parametrize(("scenario_id", "change", "names"), [
    ("role-revocation", {"policy": {"fail_closed_tolerance": timedelta(milliseconds=100)}},
     ("policy.fail_closed_tolerance 0.1s", "sampling interval 0.167s")),
    ("cert-rotation", {"policy": {"recovery_bound": timedelta(seconds=1)}},
     ("policy.recovery_bound 1s", "fastest possible recovery 1.5s")),
    ("vault-token-expiry", {"vault": {"token_ttl": timedelta(minutes=5), "token_max_ttl": timedelta(minutes=10)}},
     ("setup.vault.token_ttl 300s", "the 60s")),
    ("mesh-ca-vault-access-lost", {"mesh": {"cert_ttl": timedelta(minutes=3)}},
     ("setup.mesh.cert_ttl 180s", "renew_fraction 0.5", "the 60s")),
    ("vault-seal", {"mesh": {"cert_ttl": timedelta(hours=24)}}, ("setup.mesh.cert_ttl 86400s", "the 300s")),
])
def test_an_impossible_bound_names_both_values(default: Profile, scenario_id: str, change: dict[str, dict[str, Any]],
                                               names: tuple[str, ...]) -> None:
    with pytest.raises(ScenarioConfigError) as raised:
        check_possible(scenario_id, with_changes(default, **change))
    message = str(raised.value)
    assert "\n" not in message and str(DEFAULT_PROFILE) in message
    for name in names:
        assert name in message


def test_an_unknown_scenario_id_is_refused_with_the_known_ids() -> None:
    with pytest.raises(UnknownScenario) as raised:
        fault_class("vault-sael")
    message = str(raised.value)
    assert message.startswith("unknown scenario 'vault-sael'; choose one of vault-token-expiry, ")
    assert all(scenario_id in message for scenario_id in FAULTS)


def test_with_a_plugged_in_ca_the_vault_mesh_ca_scenarios_do_not_apply_and_seal_spares_the_mesh(
        default: Profile) -> None:
    plugin = with_changes(default, mesh={"ca": "plugin"})
    skipped = {scenario for scenario in FAULTS if inapplicable(scenario, plugin)}
    assert skipped == {"mesh-ca-vault-access-lost"}  # the rotations put new cacerts in front of istiod
    assert "setup.mesh.ca plugin" in inapplicable("mesh-ca-vault-access-lost", plugin)
    # On someone's existing cluster their cacerts are not ours to replace.
    on_theirs = {scenario for scenario in FAULTS if inapplicable(scenario, plugin, "kubeconfig")}
    assert on_theirs == {"mesh-ca-vault-access-lost", "intermediate-rotation", "root-rotation"}
    assert "istio-system/cacerts" in inapplicable("root-rotation", plugin, "kubeconfig")
    # With istio-csr on a cluster, only the root rotation is skipped (its static root file), with the reason.
    on_istio_csr = {scenario for scenario in FAULTS if inapplicable(scenario, default, "kubeconfig")}
    assert on_istio_csr == {"root-rotation"} == {s for s in FAULTS if inapplicable(s, default, "kind")}
    assert "istio-root-ca" in inapplicable("root-rotation", default, "kind")
    assert not any(inapplicable(scenario, default) for scenario in FAULTS)
    for profile, expected in ((default, ("vault", "mesh")), (plugin, ("vault",))):
        tenant = SimpleNamespace(setup=profile.setup)
        for scenario in ("vault-seal", "vault-down"):
            fault = fault_class(scenario)(None, tenant, None, None, id=scenario)  # type: ignore[arg-type]
            assert fault.must_fail == expected
    seal = fault_class("vault-seal")(None, SimpleNamespace(setup=plugin.setup), None, None)  # type: ignore[arg-type]
    assert seal.fail_closed_in() == 0.0  # Vault reads fail at once; nothing waits for a certificate


def test_a_credential_taken_away_ends_when_no_cached_review_can_renew_it() -> None:
    from scenarios.faults import while_cached

    # 30 s certificates renewed with 15 s left, last signed at t=100: the next renewal (t=115) comes after
    # the API server's cache of that review has run out (t=100 + 10 s + margin): it ends at notAfter.
    assert while_cached(130.0, 115.0, 30.0, 15.0, cached_until=100.0) == 130.0
    # 8 s tokens, last login at t=100: the login at t=108 still passes through the cache and lives 8 s
    # more; the one at t=116 is refused.
    assert while_cached(108.0, 108.0, 8.0, 8.0, cached_until=100.0) == 116.0


def test_token_max_bound_scenarios_refuse_a_max_ttl_they_cannot_wait_for(default: Profile) -> None:
    long_tokens = with_changes(default, vault={"token_max_ttl": timedelta(hours=12), "token_ttl": timedelta(hours=1)})
    for scenario in ("sa-deletion", "role-policy-detach"):
        with pytest.raises(ScenarioConfigError, match="token_max_ttl 43200s"):
            check_possible(scenario, long_tokens)
