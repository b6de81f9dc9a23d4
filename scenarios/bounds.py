"""Is a scenario possible at all with this profile? Checked before anything is deployed.

A bound that the profile's TTLs (or the monitor's own resolution) make
impossible is a configuration error naming both values, not a test failure
that someone would chase as a product defect at 3 a.m.
"""

from __future__ import annotations

from datetime import timedelta

from cluster.errors import TrustgridError
from cluster.profile import Profile
from scenarios.timeline import CONVERGE

MONITOR_HZ = 6.0
# The proxies' renewal and the agents' login retry after a failure, once a second.
RETRY_S = 1.0
# How long a scenario waits for evidence that its fault took effect.
EFFECT_TIMEOUT_S = 60.0
# Chaos waits for certificates and tokens to run out; longer than this is a test profile's job.
MAX_TTL_WAIT_S = 300.0
# The longest a conformance test waits for a live lifetime (a renewal, a rotation); beyond it the
# test drives the event itself or skips, saying why and how long it would have taken.
WAIT_BUDGET_S = 90.0
CERT_BOUND = frozenset({"vault-seal", "vault-down", "mesh-ca-vault-access-lost", "mesh-ca-down", "sa-deletion"})
# These fail closed on the Vault side only when the app's token reaches its max TTL.
TOKEN_MAX_BOUND = frozenset({"sa-deletion", "role-policy-detach"})


class ScenarioConfigError(TrustgridError):
    """The profile makes this scenario impossible to judge; fix the profile, not the product."""


def _s(value: timedelta | float) -> str:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    return f"{seconds:g}s"


def check_possible(scenario_id: str, profile: Profile) -> None:
    policy, setup = profile.policy, profile.setup
    where = f"profile {profile.path}"
    period = 1.0 / MONITOR_HZ
    if policy.fail_closed_tolerance.total_seconds() < period:
        raise ScenarioConfigError(
            f"{where}: policy.fail_closed_tolerance {_s(policy.fail_closed_tolerance)} is shorter than the "
            f"monitor's sampling interval {_s(round(period, 3))}, so no run could meet it",
            fix=f"set it to at least {_s(round(period, 3))} (2s is the default)")
    fastest = CONVERGE * period + RETRY_S
    if policy.recovery_bound.total_seconds() < fastest:
        raise ScenarioConfigError(
            f"{where}: policy.recovery_bound {_s(policy.recovery_bound)} is shorter than the fastest possible "
            f"recovery {_s(round(fastest, 2))} ({CONVERGE} samples at {MONITOR_HZ:g} Hz after a {_s(RETRY_S)} retry)",
            fix="raise policy.recovery_bound")
    if scenario_id == "vault-token-expiry" and setup.vault.token_ttl.total_seconds() > EFFECT_TIMEOUT_S:
        raise ScenarioConfigError(
            f"{where}: setup.vault.token_ttl {_s(setup.vault.token_ttl)} outlives the {_s(EFFECT_TIMEOUT_S)} "
            f"that {scenario_id} waits for the token to expire", fix="use a test profile with a shorter token_ttl")
    renewal_due = setup.mesh.cert_ttl.total_seconds() * setup.mesh.renew_fraction
    if scenario_id == "mesh-ca-vault-access-lost" and renewal_due + RETRY_S > EFFECT_TIMEOUT_S:
        raise ScenarioConfigError(
            f"{where}: setup.mesh.cert_ttl {_s(setup.mesh.cert_ttl)} x renew_fraction {setup.mesh.renew_fraction:g} "
            f"puts the first renewal (when the CA meets the refusal) after the {_s(EFFECT_TIMEOUT_S)} that "
            f"{scenario_id} waits for it", fix="use a test profile with a shorter cert_ttl")
    if scenario_id in TOKEN_MAX_BOUND and setup.vault.token_max_ttl.total_seconds() > MAX_TTL_WAIT_S:
        raise ScenarioConfigError(
            f"{where}: setup.vault.token_max_ttl {_s(setup.vault.token_max_ttl)}: {scenario_id} fails closed on the "
            f"Vault side only when the app's token reaches its max TTL, beyond the {_s(MAX_TTL_WAIT_S)} a chaos run "
            "waits", fix="use a test profile with token_max_ttl of 5m or less (the default profile uses 60s)")
    if scenario_id in CERT_BOUND and setup.mesh.cert_ttl.total_seconds() > MAX_TTL_WAIT_S:
        raise ScenarioConfigError(
            f"{where}: setup.mesh.cert_ttl {_s(setup.mesh.cert_ttl)}: {scenario_id} fails closed only when the "
            f"certificates expire, beyond the {_s(MAX_TTL_WAIT_S)} a chaos run waits",
            fix="use a test profile with cert_ttl of 5m or less (the default profile uses 30s)")


# With ``ca: plugin`` istiod signs with a Vault-issued intermediate it holds itself: no mesh CA token
# to lose. The rotations put new cacerts in front of istiod instead (Faults.install_plugin_ca).
NOT_WITH_PLUGIN_CA = {
    "mesh-ca-vault-access-lost": "the mesh CA (istiod) holds no Vault token",
}
# On someone's existing cluster, istio-system/cacerts is theirs: a rotation would replace their mesh's CA.
NOT_ON_AN_EXISTING_PLUGIN_CA = {
    "intermediate-rotation": "it would replace the cluster's own istio-system/cacerts; certify it on kind",
    "root-rotation": "it would replace the cluster's own istio-system/cacerts; certify it on kind",
}


# istio-csr (kind, an existing cluster) hands proxies the roots of its static --root-ca-file (the Secret
# istio-root-ca, istio-csr deploy/charts/istio-csr/templates/deployment.yaml), not Vault's issuers: a root
# rotation there needs the overlap bundle published in that file and istio-csr rolled, before and after the
# new root. The local platform's mesh CA reads Vault's roots itself (cluster/local/meshca.py).
ISTIO_CSR_PLATFORMS = ("kind", "kubeconfig")
NOT_WITH_ISTIO_CSR = {
    "root-rotation": ("istio-csr trusts only its static root file (istio-root-ca); publishing the overlap bundle "
                      "there and rolling istio-csr is not automated yet, and no kind run has proven it; the local "
                      "platform certifies the rotation"),
}


def inapplicable(scenario_id: str, profile: Profile, platform: str = "") -> str:
    """Why a scenario does not apply to this setup on this platform ('' when it does)."""
    if (profile.setup.mesh.ca == "istio-csr" and platform in ISTIO_CSR_PLATFORMS
            and scenario_id in NOT_WITH_ISTIO_CSR):
        return f"{scenario_id} is not run on {platform} with istio-csr: {NOT_WITH_ISTIO_CSR[scenario_id]}"
    if profile.setup.mesh.ca == "plugin" and scenario_id in NOT_WITH_PLUGIN_CA:
        return f"{scenario_id} does not apply with setup.mesh.ca plugin: {NOT_WITH_PLUGIN_CA[scenario_id]}"
    if profile.setup.mesh.ca == "plugin" and platform == "kubeconfig" and scenario_id in NOT_ON_AN_EXISTING_PLUGIN_CA:
        return (f"{scenario_id} is not run on an existing cluster with setup.mesh.ca plugin: "
                f"{NOT_ON_AN_EXISTING_PLUGIN_CA[scenario_id]}")
    return ""


def over_budget(wait_s: float, what: str, fix: str) -> str:
    """Why a test must not wait ``wait_s`` seconds for ``what`` ('' when it is within WAIT_BUDGET_S)."""
    if wait_s <= WAIT_BUDGET_S:
        return ""
    return (f"waiting for {what} would take {_s(round(wait_s))}, beyond the {_s(WAIT_BUDGET_S)} a test may wait on "
            f"a live lifetime; {fix}")
