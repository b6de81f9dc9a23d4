"""Conformance findings, from live-shaped data: each says what was found, where, and the fix."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cluster.conformance import (
    RenewalDependency,
    audience_findings,
    policy_grants,
    renewal_safety_findings,
    revocation_latency_findings,
    role_scope_findings,
    ttl_ceiling_findings,
)
from cluster.meshconfig import parse_mesh_config
from cluster.profile import Policy
from cluster.tokenlife import TokenLifetime, token_end, token_lifetime

POLICY = Policy(max_vault_token_ttl=timedelta(hours=1), max_revocation_latency=timedelta(minutes=5))
MOUNT = {"default_lease_ttl": 2764800, "max_lease_ttl": 2764800}  # a mount that sets nothing: the system's 32 days
CA = RenewalDependency("Issuer istio-system/mesh-ca", "kubernetes", "mesh-ca")
MESH = parse_mesh_config("defaultConfig:\n  proxyMetadata:\n    SECRET_GRACE_PERIOD_RATIO: '0.5'\n")


def lifetime(name: str, tune: dict[str, int] | None = None, **role: int) -> TokenLifetime:
    return token_lifetime(f"auth/kubernetes/role/{name}", role, tune or MOUNT)


@pytest.mark.parametrize(("role", "tune", "ttl", "max_s"), [
    ({"token_ttl": 20, "token_max_ttl": 60}, MOUNT, 20, 60),
    # The mount clamps the role: its max_lease_ttl wins over a larger token_max_ttl, and cuts the TTL too.
    ({"token_ttl": 7200, "token_max_ttl": 2592000}, {"default_lease_ttl": 60, "max_lease_ttl": 3600}, 3600, 3600),
    # An explicit max shortens the token below its token_max_ttl.
    ({"token_ttl": 60, "token_max_ttl": 300, "token_explicit_max_ttl": 10}, MOUNT, 10, 10),
    # No token_ttl: the mount's default, still under the max.
    ({"token_max_ttl": 600}, {"default_lease_ttl": 120, "max_lease_ttl": 3600}, 120, 600),
    # Periodic: the period on every renewal, and no end without an explicit max...
    ({"token_period": 30, "token_max_ttl": 60}, MOUNT, 30, None),
    # ...and the explicit max as its end when set; the period is capped by the effective max.
    ({"token_period": 30, "token_explicit_max_ttl": 20}, MOUNT, 20, 20),
])
def test_a_roles_tokens_live_as_vault_computes_it(role: dict[str, int], tune: dict[str, int], ttl: float,
                                                  max_s: float | None) -> None:
    found = lifetime("r", tune, **role)
    assert (found.ttl_s, found.max_s) == (ttl, max_s)


def test_a_live_tokens_end_counts_from_its_creation_not_its_current_ttl() -> None:
    found = lifetime("r", token_ttl=20, token_max_ttl=60)
    assert token_end({"creation_time": 1000, "ttl": 20, "explicit_max_ttl": 0}, found) == 1060
    assert token_end({"creation_time": 1000, "ttl": 20, "explicit_max_ttl": 30}, found) == 1030
    assert token_end({"creation_time": 1000, "period": 30}, lifetime("p", token_period=30)) is None


def test_a_token_that_lives_past_the_ceiling_is_found_with_its_role_and_the_fix() -> None:
    found = [str(f) for f in ttl_ceiling_findings([
        lifetime("a", token_ttl=20, token_max_ttl=60),
        lifetime("b", token_ttl=20, token_max_ttl=2592000),
        lifetime("c", token_ttl=20, token_period=30),
        # Clamped by its mount to the ceiling: no finding, whatever the role says.
        lifetime("d", {"default_lease_ttl": 60, "max_lease_ttl": 3600}, token_max_ttl=2592000),
        lifetime("e", token_period=30, token_explicit_max_ttl=1800),
    ], POLICY)]
    assert found == [
        "auth/kubernetes/role/b: tokens live up to 720h (the smallest of the mount's max_lease_ttl, token_max_ttl "
        "and token_explicit_max_ttl), above the ceiling 1h; fix: set token_max_ttl to 1h or less",
        "auth/kubernetes/role/c: periodic tokens (token_period 30s) with no token_explicit_max_ttl are renewable "
        "for ever; fix: set token_explicit_max_ttl to 1h or less, or drop token_period",
    ]


def test_renewal_safety_is_the_window_against_the_tokens_life_and_renewability() -> None:
    # 30 s certificates renewed with half their life left: a 15 s window.
    assert renewal_safety_findings(CA, lifetime("mesh-ca", token_ttl=60, token_max_ttl=300), 30, MESH) == []
    assert renewal_safety_findings(CA, lifetime("mesh-ca", token_ttl=5, token_max_ttl=300), 30, MESH) == []
    # A mount that clamps a long role is no false finding...
    clamped = lifetime("mesh-ca", {"default_lease_ttl": 60, "max_lease_ttl": 120}, token_ttl=600, token_max_ttl=3600)
    assert renewal_safety_findings(CA, clamped, 30, MESH) == []
    found = renewal_safety_findings(CA, lifetime("mesh-ca", token_ttl=5, token_max_ttl=10), 30, MESH)
    assert len(found) == 1
    assert found[0].where == "auth/kubernetes/role/mesh-ca"
    assert "lives 5s and renews only to 10s, inside the renewal window of 15s" in found[0].what
    assert "ConfigMap istio-system/istio" in found[0].what
    assert found[0].fix == "set token_ttl to at least 15s, or its effective max TTL above it"
    # ...and an explicit max that shortens a long role is not missed.
    short = renewal_safety_findings(
        CA, lifetime("mesh-ca", token_ttl=60, token_max_ttl=300, token_explicit_max_ttl=10), 30, MESH)
    assert len(short) == 1 and "renews only to 10s (token_explicit_max_ttl)" in short[0].what
    missing = renewal_safety_findings(CA, None, 30, MESH)
    assert "which Vault does not have" in missing[0].what


def test_the_revocation_latency_is_the_max_ttl_plus_the_api_servers_token_cache() -> None:
    found = revocation_latency_findings([
        lifetime("ok", token_ttl=20, token_max_ttl=60),
        lifetime("edge", token_ttl=20, token_max_ttl=290),  # 290 s + 10 s cache = 300 s: at the ceiling
        lifetime("long", token_ttl=20, token_max_ttl=3600),
        lifetime("forever", token_period=30),
    ], POLICY)
    assert [f.where for f in found] == ["auth/kubernetes/role/long", "auth/kubernetes/role/forever"]
    assert "keeps access up to 1h0m10s:" in found[0].what  # durations are written as Vault writes them
    assert "its tokens' max TTL 1h, plus the API server's 10s token cache" in found[0].what
    assert "above the revocation latency ceiling 5m" in found[0].what
    assert found[0].fix == "lower token_max_ttl (or token_explicit_max_ttl) to 4m50s or less"
    assert "for ever" in found[1].what


def test_a_role_without_an_audience_is_a_finding() -> None:
    found = audience_findings({"a": {"audience": "vault"}, "b": {"audience": ""}, "c": {}}, "kubernetes")
    assert [str(f) for f in found] == [
        f"auth/kubernetes/role/{name}: checks no audience: a service-account token minted for any audience "
        "logs in; fix: set audience to the one audience workloads mint for Vault" for name in ("b", "c")]


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


@pytest.mark.parametrize(("flavor", "version", "reviews"), [
    ("vault", "1.21.4", False), ("vault", "2.0.4", False), ("openbao", "2.6.2", False),
    ("openbao", "2.7.2", True), ("openbao", "v2.8.0", True), ("openbao", "3.0.0", True),
])
def test_whether_renewal_reviews_the_jwt_again_depends_on_the_server(flavor: str, version: str,
                                                                     reviews: bool) -> None:
    from cluster.tokenlife import renewal_reviews_the_jwt

    assert renewal_reviews_the_jwt(flavor, version) is reviews
