"""The live setup, judged against the profile's policy.

Every check reads what is really configured, from Vault and the API server
(and the wire), never the profile's setup: the same tests certify a cluster
that someone else set up. A finding says what was found, where, and the fix.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509

from cluster import conformance, meshchecks
from cluster.conformance import Finding
from cluster.kube import Kube
from cluster.meshconfig import read_mesh_config
from cluster.platform import CallResult, Platform, Workload
from cluster.settings import Settings
from cluster.tenancy import Tenant
from cluster.tokenlife import TokenLifetime
from cluster.vault import VaultConfigurator

pytestmark = pytest.mark.conformance

# A connection-level refusal; any HTTP answer means the server spoke plaintext.
REFUSED = ("reset", "refused", "tls_handshake", "timeout")


def assert_no_findings(findings: list[Finding]) -> None:
    assert not findings, "\n" + "\n".join(f"- {f}" for f in findings)


def canary() -> str:
    return f"tg-canary-{secrets.token_hex(8)}"


@contextlib.contextmanager
def probe_servers(platform: Platform, kube: Kube, namespaces: list[str]) -> Iterator[dict[str, Workload]]:
    """A meshed echo server in each namespace, removed afterwards."""
    deployed: dict[str, Workload] = {}
    try:
        for namespace in namespaces:
            kube.ensure_service_account(namespace, "app", platform.run_id)
            deployed[namespace] = platform.deploy(namespace, "tg-probe", "app")
        yield deployed
    finally:
        for workload in deployed.values():
            platform.undeploy(workload)


def _certificate(platform: Platform, workload: Workload) -> x509.Certificate:
    return x509.load_der_x509_certificate(platform.peer_certificate(workload))


def _backdate_s(platform: Platform, role: str) -> float:
    """Vault backdates notBefore for clock skew; that part is not lifetime."""
    layout = platform.vault_layout
    found = platform.vault_admin().adapter.get(f"/v1/{layout.pki_int_path}/roles/{role}")["data"]
    return float(found.get("not_before_duration") or 0)


def _live_token_lifetimes(platform: Platform, vault_config: VaultConfigurator,
                          tenant: Tenant) -> list[TokenLifetime]:
    """The token lifetimes of every live Kubernetes auth role, the tenant's among them."""
    roles = vault_config.kubernetes_roles()
    assert tenant.role in roles, f"the tenant's role {tenant.role} is missing from live Vault"
    return conformance.token_lifetimes(platform.vault_admin(), platform.vault_layout.kubernetes_path, roles)


def test_vault_token_ttls_are_within_the_ceiling(
    platform: Platform, settings: Settings, vault_config: VaultConfigurator, tenant: Tenant
) -> None:
    lifetimes = _live_token_lifetimes(platform, vault_config, tenant)
    assert_no_findings(conformance.ttl_ceiling_findings(lifetimes, settings.profile.policy))


def test_no_identity_keeps_vault_access_past_the_revocation_latency_ceiling(
    platform: Platform, settings: Settings, vault_config: VaultConfigurator, tenant: Tenant
) -> None:
    """A token outlives the removal of its role's policies or of its service account until its max TTL."""
    lifetimes = _live_token_lifetimes(platform, vault_config, tenant)
    assert_no_findings(conformance.revocation_latency_findings(lifetimes, settings.profile.policy))


def test_every_kubernetes_auth_role_checks_an_audience(vault_config: VaultConfigurator, tenant: Tenant) -> None:
    roles = vault_config.kubernetes_roles()
    assert tenant.role in roles, f"the tenant's role {tenant.role} is missing from live Vault"
    assert_no_findings(conformance.audience_findings(roles, vault_config.layout.kubernetes_path))


def test_the_mesh_ca_token_outlives_the_renewal_window(
    platform: Platform, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    """The mission's TTL-mismatch trap: the CA's token must not die before the certificates it renews."""
    dependencies = conformance.renewal_dependencies(platform.kube)
    assert dependencies, (
        "no cert-manager Issuer or ClusterIssuer logs in to Vault with Kubernetes auth; "
        "fix: point the mesh CA's issuer at Vault (spec.vault.auth.kubernetes)"
    )
    cert = _certificate(platform, deploy(tenant, "probe"))
    lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
    lifetime -= _backdate_s(platform, tenant.role)
    mesh = read_mesh_config(platform.kube)
    admin = platform.vault_admin()
    findings = []
    for dependency in dependencies:
        role = conformance.read_role(admin, dependency.mount, dependency.role)
        lifetimes = conformance.token_lifetimes(admin, dependency.mount, {dependency.role: role}) if role else []
        findings += conformance.renewal_safety_findings(dependency, lifetimes[0] if lifetimes else None, lifetime,
                                                        mesh)
    assert_no_findings(findings)


def test_every_kubernetes_auth_role_is_scoped_to_one_namespace_and_named_accounts(
    vault_config: VaultConfigurator, settings: Settings, tenant: Tenant
) -> None:
    roles = vault_config.kubernetes_roles()
    assert tenant.role in roles, f"the tenant's role {tenant.role} is missing from live Vault"
    assert_no_findings(
        conformance.role_scope_findings(roles, vault_config.layout.kubernetes_path, settings.profile.policy)
    )


def test_no_pki_role_issues_a_spiffe_id_outside_its_namespace(platform: Platform, tenant: Tenant) -> None:
    mount = platform.vault_layout.pki_int_path
    listed = platform.vault_admin().adapter.list(f"/v1/{mount}/roles")["data"]["keys"]
    assert tenant.role in listed, f"the tenant's PKI role {tenant.role} is missing from {mount}/roles"
    trust_domain = read_mesh_config(platform.kube).trust_domain
    admin = platform.vault_admin()
    ca = conformance.mesh_ca_identity(admin, platform.kube, mount)
    assert ca.auth_roles, "no Issuer of the mesh CA logs in to Vault: the CA's own identity cannot be told apart"
    assert_no_findings(conformance.pki_scope_findings(admin, mount, trust_domain, ca=ca))


@pytest.mark.cluster_fault  # adds a PKI role and Vault identities that every PKI check would see
def test_a_role_that_signs_any_namespace_passes_only_while_the_mesh_ca_alone_may_use_it(
        platform: Platform, vault_config: VaultConfigurator) -> None:
    """istio-csr's shape: one PKI role for every namespace, behind the CA's own policy; then a leak."""
    admin, layout = platform.vault_admin(), platform.vault_layout
    mount, auth = layout.pki_int_path, layout.kubernetes_path
    name = f"tg-any-{secrets.token_hex(3)}"
    trust_domain = read_mesh_config(platform.kube).trust_domain
    role = {"bound_service_account_names": [name], "bound_service_account_namespaces": ["istio-system"],
            "token_policies": [name], "token_ttl": 60}
    try:
        vault_config.configure_mesh_pki_role(name)  # the role the kind platform gives istio-csr
        admin.sys.create_or_update_acl_policy(name, f'path "{mount}/sign/{name}" {{ capabilities = ["update"] }}')
        admin.adapter.post(f"/v1/auth/{auth}/role/{name}", json=role)
        # As an istio-csr Issuer would declare it: this role CA-wide, these identities the CA's. The live
        # mesh CA's policy signs through every role (pki_int/sign/*), so its identity is the CA's too.
        live = conformance.mesh_ca_identity(admin, platform.kube, mount)
        ca = conformance.MeshCaIdentity(
            {**live.auth_roles, name: dict(admin.adapter.get(f"/v1/auth/{auth}/role/{name}")["data"])},
            live.pki_roles | {name})

        def ours(findings: list[conformance.Finding]) -> list[conformance.Finding]:
            return [f for f in findings if f.where == f"{mount}/roles/{name}"]

        not_ca_wide = ours(conformance.pki_scope_findings(admin, mount, trust_domain, ca=live))
        assert not_ca_wide and "not a CA-wide issuer's role" in not_ca_wide[0].what, \
            "a role no issuer names as CA-wide is a finding when it signs any namespace (the check can fail)"
        assert not ours(conformance.pki_scope_findings(admin, mount, trust_domain, ca=ca))
        admin.adapter.post(f"/v1/auth/{auth}/role/{name}-leak", json={**role, "token_policies": [name, "default"]})
        assert ours(conformance.pki_scope_findings(admin, mount, trust_domain, ca=ca)), \
            "a CA-wide role that another identity may sign through is a finding"
    finally:
        for path in (f"/v1/auth/{auth}/role/{name}-leak", f"/v1/auth/{auth}/role/{name}", f"/v1/{mount}/roles/{name}"):
            admin.adapter.delete(path)
        admin.sys.delete_acl_policy(name)


def answers_from_every_namespace(platform: Platform, kube: Kube, settings: Settings, caller: Workload,
                                 must_include: str) -> dict[str, tuple[Workload, CallResult]]:
    """A probe server in every application namespace but the caller's, and the caller's call to each."""
    namespaces = [ns for ns in conformance.application_namespaces(kube, settings.profile.policy)
                  if ns != caller.namespace]
    assert must_include in namespaces, f"the live namespaces {namespaces} miss {must_include}"
    with probe_servers(platform, kube, namespaces) as servers:
        return {ns: (server, platform.call(caller, server, canary=canary(), timeout=5))
                for ns, server in servers.items()}


@pytest.mark.cluster_fault  # runs alone: it judges every namespace, so no half-made tenant of another test
def test_strict_mtls_everywhere_outside_exempt_namespaces(
    platform: Platform, settings: Settings, kube: Kube, new_tenant: Callable[..., Tenant],
    deploy: Callable[..., Workload],
) -> None:
    mesh, legacy = new_tenant(), new_tenant(meshed=False)
    naked = deploy(legacy, "naked", meshed=False)
    findings = meshchecks.mtls_findings(kube, settings.profile.policy,
                                        conformance.application_namespaces(kube, settings.profile.policy))
    for namespace, (server, answer) in answers_from_every_namespace(platform, kube, settings, naked,
                                                                    mesh.namespace).items():
        if answer.error not in REFUSED:
            in_force = meshchecks.mode_in_force(kube, namespace, {"app": server.name})
            findings.append(Finding(f"a naked (plaintext) client got an answer ({answer.status} {answer.error}); "
                                    f"mode in force: {in_force}", f"namespace {namespace}, pod {server.name}",
                                    "make mTLS STRICT there"))
    assert_no_findings(findings)


def test_no_destination_rule_turns_tls_off_toward_an_application_namespace(
    settings: Settings, kube: Kube, tenant: Tenant
) -> None:
    namespaces = conformance.application_namespaces(kube, settings.profile.policy)
    assert tenant.namespace in namespaces
    assert_no_findings(meshchecks.destination_rule_findings(kube, namespaces))


def test_no_workload_bypasses_its_sidecar_in_a_meshed_namespace(
    settings: Settings, kube: Kube, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    deploy(tenant, "probe")
    namespaces = conformance.application_namespaces(kube, settings.profile.policy)
    assert_no_findings(meshchecks.bypass_findings(kube, namespaces))


@pytest.mark.cluster_fault  # runs alone: it judges every namespace, so no half-made tenant of another test
def test_every_application_namespace_denies_a_foreign_principal(
    platform: Platform, settings: Settings, kube: Kube, new_tenant: Callable[..., Tenant],
    deploy: Callable[..., Workload],
) -> None:
    target, foreign = new_tenant(), new_tenant()
    stranger = deploy(foreign, "stranger")
    answers = answers_from_every_namespace(platform, kube, settings, stranger, target.namespace)
    findings = meshchecks.authz_findings(kube, list(answers))
    for namespace, (server, answer) in answers.items():
        if answer.status != 403:
            findings.append(Finding(
                f"a principal of namespace {foreign.namespace} got {answer.status} {answer.error}, not 403",
                f"namespace {namespace}, pod {server.name}", "allow only the principals that need access"))
    assert_no_findings(findings)


def test_an_audit_device_is_enabled(platform: Platform, settings: Settings) -> None:
    assert_no_findings(conformance.audit_findings(platform.vault_admin(), settings.profile.policy))


def test_certificate_lifetime_on_the_wire_is_within_the_ceiling(
    platform: Platform, settings: Settings, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    workload = deploy(tenant, "probe")
    cert = _certificate(platform, workload)
    where = f"the proxy of {workload.namespace}/{workload.name}"
    assert_no_findings(
        conformance.cert_lifetime_findings(where, cert, _backdate_s(platform, tenant.role), settings.profile.policy)
    )
