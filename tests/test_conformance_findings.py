"""Conformance findings, from live-shaped data: each says what was found, where, and the fix."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cluster.conformance import (
    RenewalDependency,
    TokenLimits,
    policy_grants,
    renewal_safety_findings,
    role_scope_findings,
    ttl_ceiling_findings,
)
from cluster.meshconfig import parse_mesh_config
from cluster.profile import Policy

POLICY = Policy(max_vault_token_ttl=timedelta(hours=1))
CA = RenewalDependency("Issuer istio-system/mesh-ca", "kubernetes", "mesh-ca")
MESH = parse_mesh_config("defaultConfig:\n  proxyMetadata:\n    SECRET_GRACE_PERIOD_RATIO: '0.5'\n")


def test_a_token_that_lives_past_the_ceiling_is_found_with_its_role_and_the_fix() -> None:
    limits = [TokenLimits("auth/kubernetes/role/a", 20, 60, 0), TokenLimits("auth/kubernetes/role/b", 20, 2592000, 0),
              TokenLimits("auth/kubernetes/role/c", 20, 60, 30)]
    found = [str(f) for f in ttl_ceiling_findings(limits, POLICY)]
    assert found == [
        "auth/kubernetes/role/b: tokens live up to 720h (token_max_ttl, or the mount's max_lease_ttl), "
        "above the ceiling 1h; fix: set token_max_ttl to 1h or less",
        "auth/kubernetes/role/c: periodic tokens (token_period 30s) never reach a max TTL; "
        "fix: drop token_period and set token_max_ttl",
    ]


def test_renewal_safety_is_the_window_against_the_tokens_life_and_renewability() -> None:
    # 30 s certificates renewed with half their life left: a 15 s window.
    assert renewal_safety_findings(CA, TokenLimits("auth/kubernetes/role/mesh-ca", 60, 300, 0), 30, MESH) == []
    assert renewal_safety_findings(CA, TokenLimits("auth/kubernetes/role/mesh-ca", 5, 300, 0), 30, MESH) == []
    found = renewal_safety_findings(CA, TokenLimits("auth/kubernetes/role/mesh-ca", 5, 10, 0), 30, MESH)
    assert len(found) == 1
    assert found[0].where == "auth/kubernetes/role/mesh-ca"
    assert "lives 5s and renews only to 10s, inside the renewal window of 15s" in found[0].what
    assert "ConfigMap istio-system/istio" in found[0].what
    assert found[0].fix == "set token_ttl to at least 15s, or token_max_ttl above it"
    missing = renewal_safety_findings(CA, None, 30, MESH)
    assert "which Vault does not have" in missing[0].what


def test_role_scope_names_the_role_and_what_it_is_bound_to() -> None:
    roles = {"ok": {"bound_service_account_namespaces": ["a"], "bound_service_account_names": ["app"]},
             "wide": {"bound_service_account_namespaces": ["*"], "bound_service_account_names": ["*"]}}
    found = [str(f) for f in role_scope_findings(roles, "kubernetes", POLICY)]
    assert found == [
        "auth/kubernetes/role/wide: bound to namespaces ['*'], selector ''; "
        "fix: bind each role to exactly one namespace",
        "auth/kubernetes/role/wide: bound to service accounts ['*']; fix: name the service accounts, never '*'",
    ]


def test_the_mesh_config_falls_back_to_istios_defaults() -> None:
    default = parse_mesh_config("")
    assert (default.trust_domain, default.grace_ratio) == ("cluster.local", 0.5)
    assert parse_mesh_config("trustDomain: example.org\n").trust_domain == "example.org"


@pytest.mark.parametrize(("pattern", "path", "grants"), [
    ("pki_int/sign/*", "pki_int/sign/mesh", True),
    ("pki_int/sign/mesh", "pki_int/sign/mesh", True),
    ("pki_int/sign/mesh", "pki_int/sign/mesh-2", False),
    ("pki_int/+/mesh", "pki_int/sign/mesh", True),
    ("pki_int/+/mesh", "pki_int/a/b/mesh", False),
    ("pki*", "pki_int/sign/mesh", True),
    ("pki_int/issue/*", "pki_int/sign/mesh", False),
    ("pki.int/sign/mesh", "pkiXint/sign/mesh", False),
])
def test_vault_policy_paths_match_as_vault_matches_them(pattern: str, path: str, grants: bool) -> None:
    assert policy_grants(pattern, path) is grants
