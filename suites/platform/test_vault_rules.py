"""The rules the suite models about Vault and the API server, proven live against the real servers.

Conformance (token TTL ceiling, renewal safety, revocation latency) and chaos (sa-deletion,
role-policy-detach) compute bounds from these rules; here each rule meets the real OpenBao
and kube-apiserver, so a server that behaves otherwise fails a test instead of a verdict.
The sources are cited in cluster/tokenlife.py.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import hvac
import pytest

from cluster.conformance import RenewalDependency, renewal_safety_findings, ttl_ceiling_findings
from cluster.meshconfig import parse_mesh_config
from cluster.platform import Platform
from cluster.profile import Policy
from cluster.tenancy import Tenant
from cluster.tokenlife import (
    DELETION_MARGIN_S,
    TOKEN_REVIEW_CACHE_S,
    TokenLifetime,
    renewal_reviews_the_jwt,
    token_end,
    token_lifetime,
)
from cluster.vault import revoke_role_tokens
from cluster.wait import wait_until
from scenarios.faults import accessor_lookup, expiry_evidence

# A mount whose own max (10 s) is shorter than what the roles ask for: it must clamp them.
MOUNT_DEFAULT_S, MOUNT_MAX_S = 8, 10
SLACK_S = 2.0  # Vault counts in whole seconds; the test's own requests take a moment


@contextlib.contextmanager
def scratch_mount(platform: Platform) -> Iterator[str]:
    """A Kubernetes-auth mount configured like the platform's, tuned short, removed afterwards."""
    admin = platform.vault_admin()
    main = platform.vault_layout.kubernetes_path
    path = f"tg-ttl-{secrets.token_hex(3)}"
    config = admin.adapter.get(f"/v1/auth/{main}/config")["data"]
    admin.sys.enable_auth_method("kubernetes", path=path, description=f"trustgrid run {platform.run_id}")
    try:
        admin.adapter.post(f"/v1/auth/{path}/config", json={
            key: config[key] for key in ("kubernetes_host", "kubernetes_ca_cert", "issuer", "disable_local_ca_jwt")
            if key in config})
        admin.sys.tune_auth_method(path, default_lease_ttl=f"{MOUNT_DEFAULT_S}s", max_lease_ttl=f"{MOUNT_MAX_S}s")
        yield path
    finally:
        admin.sys.disable_auth_method(path)


def role_on(platform: Platform, tenant: Tenant, mount: str, name: str, **token: int) -> TokenLifetime:
    """A role for the tenant's app account; returns what Vault's rule says its logins get."""
    admin = platform.vault_admin()
    admin.adapter.post(f"/v1/auth/{mount}/role/{name}", json={
        "bound_service_account_names": ["app"], "bound_service_account_namespaces": [tenant.namespace],
        "audience": tenant.setup.vault.audience, "token_policies": [tenant.binding.policy], **token})
    role = admin.adapter.get(f"/v1/auth/{mount}/role/{name}")["data"]
    return token_lifetime(f"auth/{mount}/role/{name}", role, admin.adapter.get(f"/v1/sys/auth/{mount}/tune")["data"])


def login(platform: Platform, tenant: Tenant, mount: str, role: str) -> tuple[hvac.Client, dict[str, Any]]:
    client = platform.vault_client()
    response = client.auth.kubernetes.login(role=role, jwt=tenant.token(), mount_point=mount)
    client.token = str(response["auth"]["client_token"])
    return client, dict(client.auth.token.lookup_self()["data"])


def renew(client: hvac.Client, increment: int = 3600) -> int:
    """Renew asking for far more than any max: Vault answers with what the max still allows."""
    return int(client.auth.token.renew_self(increment=f"{increment}s")["auth"]["lease_duration"])


def test_a_logins_lifetime_is_the_smallest_max_counted_from_its_creation(platform: Platform, tenant: Tenant) -> None:
    """sdk/framework/lease.go CalculateTTL: the mount clamps the role, an explicit max shortens it further."""
    with scratch_mount(platform) as mount:
        tune = platform.vault_admin().adapter.get(f"/v1/sys/auth/{mount}/tune")["data"]
        assert (tune["default_lease_ttl"], tune["max_lease_ttl"]) == (MOUNT_DEFAULT_S, MOUNT_MAX_S)
        cases = {
            "clamped": role_on(platform, tenant, mount, "clamped", token_ttl=9, token_max_ttl=3600),
            "explicit": role_on(platform, tenant, mount, "explicit", token_ttl=9, token_max_ttl=3600,
                                token_explicit_max_ttl=5),
            "defaulted": role_on(platform, tenant, mount, "defaulted", token_max_ttl=3600),
        }
        assert [(c.ttl_s, c.max_s) for c in cases.values()] == [(9, 10), (5, 5), (8, 10)]
        for name, expected in cases.items():
            client, looked_up = login(platform, tenant, mount, name)
            assert looked_up["creation_ttl"] == expected.ttl_s, (name, looked_up["creation_ttl"])
            end = token_end(looked_up, expected)
            assert end is not None
            granted = renew(client)
            remaining = end - time.time()
            assert remaining - SLACK_S <= granted <= remaining + SLACK_S, (name, granted, remaining)


def test_a_periodic_token_outlives_every_max_unless_an_explicit_max_ends_it(platform: Platform, tenant: Tenant) -> None:
    with scratch_mount(platform) as mount:
        endless = role_on(platform, tenant, mount, "endless", token_period=3)
        ended = role_on(platform, tenant, mount, "ended", token_period=3, token_explicit_max_ttl=5)
        assert (endless.ttl_s, endless.max_s, ended.max_s) == (3, None, 5)
        forever, _ = login(platform, tenant, mount, "endless")
        finite, looked_up = login(platform, tenant, mount, "ended")
        end = token_end(looked_up, ended)
        assert end is not None

        def renewed_past_the_mount_max() -> bool:
            assert renew(forever) == endless.period_s  # the period, whatever the increment asked
            with contextlib.suppress(hvac.exceptions.VaultError):
                renew(finite)
            return time.time() > float(looked_up["creation_time"]) + MOUNT_MAX_S + 1

        wait_until(renewed_past_the_mount_max, timeout=MOUNT_MAX_S + 10, interval=1,
                   describe="a periodic token renewed past its mount's max")
        assert time.time() > end
        with pytest.raises(hvac.exceptions.Forbidden):
            finite.auth.token.lookup_self()  # the explicit max ended it


def test_vaults_word_that_a_token_expired_means_its_holder_is_refused(platform: Platform, tenant: Tenant) -> None:
    """vault-token-expiry's evidence (scenarios/faults.py expiry_evidence): lookup-accessor's negative ttl, or
    no token at all. Whichever Vault says first, the holder must already be refused (token_store.go
    lookupInternal: the request path never returns a token past its ExpireTime, revoked or not)."""
    admin = platform.vault_admin()
    with scratch_mount(platform) as mount:
        role_on(platform, tenant, mount, "brief", token_ttl=3, token_max_ttl=3)
        holder, looked_up = login(platform, tenant, mount, "brief")
        accessor = str(looked_up["accessor"])
        assert expiry_evidence(accessor_lookup(admin, accessor)) == ""  # alive: no evidence
        seen: list[str] = []

        def evidence() -> str:
            said = expiry_evidence(accessor_lookup(admin, accessor))
            if said:
                seen.append(said)
            return said

        wait_until(evidence, timeout=3 + 60, interval=0.1, describe="Vault's word that the token expired")
        assert time.time() >= float(looked_up["creation_time"]) + 3 - SLACK_S, seen  # not before its TTL
        with pytest.raises(hvac.exceptions.Forbidden):
            holder.auth.token.lookup_self()


def server(platform: Platform) -> tuple[str, str]:
    """The live server's flavor and version (sys/seal-status reports the version alone)."""
    flavor = "openbao" if "openbao" in platform.versions.vault.lower() else "vault"
    return flavor, str(platform.vault_client().sys.read_seal_status()["version"])


def test_renewal_keeps_the_policies_of_the_login_and_needs_the_role(platform: Platform, tenant: Tenant) -> None:
    """path_login.go pathLoginRenew: no new policies on renewal; a deleted role refuses it."""
    admin = platform.vault_admin()
    role_path = f"/v1/auth/{platform.vault_layout.kubernetes_path}/role/{tenant.role}"
    client = tenant.login(tenant.token())
    # The role loses the namespace's policy: new logins lose access at once...
    admin.adapter.post(role_path, json={"token_policies": ["default"]})
    fresh = tenant.login(tenant.token())
    with pytest.raises(hvac.exceptions.Forbidden):
        tenant.read_secret(fresh)
    # ...but the running token renews and keeps its old policies.
    renew(client, 20)
    assert tenant.binding.policy in client.auth.token.lookup_self()["data"]["policies"]
    assert tenant.read_secret(client) == {"canary": tenant.canary}
    # The role goes: renewal is refused, the token itself lives on until its current TTL.
    admin.adapter.delete(role_path)
    with pytest.raises(hvac.exceptions.VaultError, match="does not exist during renewal"):
        renew(client, 20)
    assert tenant.read_secret(client) == {"canary": tenant.canary}


def test_whether_renewal_reviews_a_deleted_accounts_jwt_is_the_servers_rule(
        platform: Platform, tenant: Tenant) -> None:
    """Vault renews a deleted account's token until its max TTL; OpenBao 2.7 reviews the JWT again
    and refuses once the API server's cached review has run out (cluster/tokenlife.py)."""
    flavor, version = server(platform)
    client = tenant.login(tenant.token())
    deleted_at = time.monotonic()
    tenant.kube.delete_service_account(tenant.namespace, "app")
    outcomes: list[str] = []

    def renewed_past_the_cache() -> bool:
        try:
            renew(client, 30)
            outcomes.append("renewed")
        except hvac.exceptions.VaultError as err:
            outcomes.append(f"refused: {err}")
        return time.monotonic() - deleted_at > TOKEN_REVIEW_CACHE_S + DELETION_MARGIN_S

    wait_until(renewed_past_the_cache, timeout=TOKEN_REVIEW_CACHE_S + DELETION_MARGIN_S + 10, interval=1,
               describe="renewals of a deleted account's token past the API server's cache")
    if renewal_reviews_the_jwt(flavor, version):
        assert "still exist" in outcomes[-1] and "during renewal" in outcomes[-1], (flavor, version, outcomes)
    else:
        assert outcomes[-1] == "renewed", (flavor, version, outcomes)
        assert tenant.read_secret(client) == {"canary": tenant.canary}


def test_a_deleted_accounts_token_is_accepted_while_the_api_server_caches_its_review(tenant: Tenant) -> None:
    """pkg/kubeapiserver/options/authentication.go: TokenSuccessCacheTTL 10 s, TokenReview included."""
    token = tenant.token()
    audience = tenant.setup.vault.audience
    assert tenant.kube.review_token(token, audience)  # now it is in the cache
    tenant.login(token)
    deleted_at = time.monotonic()
    tenant.kube.delete_service_account(tenant.namespace, "app")
    wait_until(lambda: not tenant.kube.review_token(token, audience), timeout=TOKEN_REVIEW_CACHE_S + DELETION_MARGIN_S,
               interval=0.2, describe="the API server to refuse the deleted account's token")
    refused_after = time.monotonic() - deleted_at
    # No more than the cache (and the margin); whether it was refused at once depends on the cache's age.
    assert refused_after <= TOKEN_REVIEW_CACHE_S + DELETION_MARGIN_S


def test_a_token_minted_for_vaults_audience_is_no_api_credential(platform: Platform, tenant: Tenant) -> None:
    """pkg/serviceaccount/jwt.go: a token whose audiences miss the API server's is refused ("token
    audiences ... is invalid for the target audiences"); --api-audiences is the issuer alone."""
    api = platform.kube.configuration
    for audience, expected in ((tenant.setup.vault.audience, 401), (None, 201)):
        token = tenant.kube.request_token(tenant.namespace, "app", audience=audience, seconds=600)
        answer = httpx.post(f"{api.host}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                            headers={"Authorization": f"Bearer {token}"}, timeout=10,
                            verify=ssl.create_default_context(cafile=api.ssl_ca_cert),
                            json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        assert answer.status_code == expected, (audience, answer.status_code)


def test_the_checks_follow_the_live_rule_both_ways(platform: Platform, tenant: Tenant) -> None:
    """No false finding when the mount clamps a long role; no miss when an explicit max shortens one."""
    ceiling = Policy(max_vault_token_ttl=timedelta(seconds=MOUNT_MAX_S))
    mesh = parse_mesh_config("defaultConfig:\n  proxyMetadata:\n    SECRET_GRACE_PERIOD_RATIO: '0.5'\n")
    with scratch_mount(platform) as mount:
        clamped = role_on(platform, tenant, mount, "clamped", token_ttl=9, token_max_ttl=86400)
        short = role_on(platform, tenant, mount, "short", token_ttl=9, token_max_ttl=86400, token_explicit_max_ttl=3)
        assert ttl_ceiling_findings([clamped], ceiling) == []
        dependency = RenewalDependency("Issuer istio-system/mesh-ca", mount, "short")
        # 12 s certificates renewed with half their life left: a 6 s window. A 9 s TTL outlives it;
        # the explicit max of 3 s does not, whatever token_ttl and token_max_ttl say.
        assert renewal_safety_findings(dependency, clamped, 12, mesh) == []
        found = renewal_safety_findings(dependency, short, 12, mesh)
        assert len(found) == 1 and "renews only to 3s (token_explicit_max_ttl)" in found[0].what
        _, looked_up = login(platform, tenant, mount, "short")
        assert looked_up["explicit_max_ttl"] == 3 and looked_up["creation_ttl"] == 3



def test_revoking_a_roles_tokens_leaves_the_other_roles_of_the_mount(platform: Platform, tenant: Tenant) -> None:
    """The mesh-CA fault's scope (cluster/vault.py revoke_role_tokens): a Kubernetes-auth token records its
    role in meta.role (vault-plugin-auth-kubernetes path_login.go), so one role's logins can go alone."""
    admin = platform.vault_admin()
    with scratch_mount(platform) as mount:
        role_on(platform, tenant, mount, "taken")
        role_on(platform, tenant, mount, "kept")
        taken = [login(platform, tenant, mount, "taken")[0] for _ in range(2)]
        kept, looked_up = login(platform, tenant, mount, "kept")
        assert looked_up["meta"]["role"] == "kept" and looked_up["path"].startswith(f"auth/{mount}/login")
        assert revoke_role_tokens(admin, mount, "taken") == 2
        for client in taken:  # the fault took effect on each of the role's tokens
            with pytest.raises(hvac.exceptions.Forbidden):
                client.auth.token.lookup_self()
        assert kept.auth.token.lookup_self()["data"]["meta"]["role"] == "kept", "another role's token was revoked"
        assert revoke_role_tokens(admin, mount, "taken") == 0  # nothing left of it: a second call is a no-op
