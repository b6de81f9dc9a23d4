"""Mutual TLS on the wire, judged on the live platform: the mesh half of the pattern."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography import x509

from cluster import istio
from cluster.agent import APP_PORT
from cluster.kube import Kube
from cluster.meshchecks import mtls_findings
from cluster.platform import Platform, Workload
from cluster.settings import Settings
from cluster.tenancy import Tenant
from cluster.wait import wait_until
from scenarios.bounds import over_budget

pytestmark = pytest.mark.conformance

Deploy = Callable[..., Workload]
REFUSED = ("reset", "refused", "tls_handshake", "timeout")


def canary() -> str:
    return f"tg-canary-{secrets.token_hex(8)}"


def spiffe(settings: Settings, workload: Workload) -> str:
    return f"spiffe://{settings.profile.setup.trust_domain}/ns/{workload.namespace}/sa/{workload.service_account}"


def test_a_mesh_client_gets_200_and_xfcc_names_both_spiffe_ids(
    platform: Platform, settings: Settings, tenant: Tenant, deploy: Deploy
) -> None:
    server, client = deploy(tenant, "server"), deploy(tenant, "client")
    result = platform.call(client, server, canary=canary(), timeout=5)
    assert result.status == 200, result
    assert result.peer_ids == (spiffe(settings, server), spiffe(settings, client))
    assert result.body["namespace"] == tenant.namespace  # the echo app really answered


def test_a_naked_client_is_refused_by_a_strict_server(
    platform: Platform, new_tenant: Callable[..., Tenant], deploy: Deploy
) -> None:
    mesh, legacy = new_tenant(), new_tenant(meshed=False)
    server = deploy(mesh, "server")
    naked = deploy(legacy, "naked", meshed=False)
    for _ in range(3):
        result = platform.call(naked, server, canary=canary(), timeout=5)
        assert result.status != 200 and result.error in REFUSED, result


@pytest.mark.cluster_fault  # a PERMISSIVE namespace would fail a concurrent mesh-wide STRICT check
def test_a_permissive_namespace_is_reported_and_lets_plaintext_through(
    platform: Platform, settings: Settings, kube: Kube, new_tenant: Callable[..., Tenant], deploy: Deploy
) -> None:
    mesh, legacy = new_tenant(), new_tenant(meshed=False)
    server = deploy(mesh, "server")
    naked = deploy(legacy, "naked", meshed=False)
    permissive = istio.peer_authentication(mesh.namespace, "default", "PERMISSIVE", platform.run_id)
    # Without the namespace's baseline AuthorizationPolicy, PERMISSIVE alone decides what a plaintext call gets.
    istio.delete(kube, istio.namespace_authorization(mesh.namespace, platform.run_id))
    assert mtls_findings(kube, settings.profile.policy, [mesh.namespace]) == []
    istio.apply(kube, permissive)
    try:
        findings = mtls_findings(kube, settings.profile.policy, [mesh.namespace])
        assert [f.what for f in findings] == [
            f"the namespace's mode is PERMISSIVE, decided by PeerAuthentication {mesh.namespace}/default"]
        assert findings[0].where == f"namespace {mesh.namespace}" and "fix:" in str(findings[0])
        # The fault took effect: plaintext now gets in, and the capture sees it.
        wait_until(lambda: platform.call(naked, server, canary=canary(), timeout=5).status == 200,
                   timeout=10, describe="the sidecar to apply PERMISSIVE")
        probe = canary()
        with platform.capture(server) as wire:
            assert platform.call(naked, server, canary=probe, timeout=5).status == 200
        assert wire.contains(probe) and wire.plaintext_flows  # the capture can see a leak
    finally:
        istio.delete(kube, permissive)
    wait_until(lambda: platform.call(naked, server, canary=canary(), timeout=5).status != 200,
               timeout=10, converge=3, describe="STRICT to be enforced again")


def test_a_burst_of_calls_crosses_the_wire_as_tls_only(
    platform: Platform, tenant: Tenant, deploy: Deploy
) -> None:
    server, client = deploy(tenant, "server"), deploy(tenant, "client")
    probes = [canary() for _ in range(20)]
    with platform.capture(server) as wire:
        results = [platform.call(client, server, canary=probe, timeout=5) for probe in probes]
    assert [r.status for r in results] == [200] * len(probes)
    # The capture saw every call: Envoy pools its mTLS connections, so count requests (TLS records), not flows.
    assert wire.requests_to(f"{server.ip}:{APP_PORT}") >= len(probes), wire.flows
    assert wire.plaintext_flows == ()
    # A flow without payload (an idle keep-alive closing as the capture starts) is neither TLS nor plaintext.
    assert all(flow.tls for flow in wire.flows if flow.payload_bytes), wire.flows
    leaked = [probe for probe in probes if wire.contains(probe)]
    assert leaked == []


def test_a_client_whose_spiffe_id_is_not_allowed_gets_403(
    platform: Platform, settings: Settings, kube: Kube, new_tenant: Callable[..., Tenant], deploy: Deploy
) -> None:
    tenant = new_tenant("app", "friend", "intruder")
    server = deploy(tenant, "server", "app")
    friend, intruder = deploy(tenant, "friend", "friend"), deploy(tenant, "intruder", "intruder")
    domain = settings.profile.setup.trust_domain
    # The namespace's baseline policy would let the intruder in (same namespace): judge this ALLOW alone.
    istio.delete(kube, istio.namespace_authorization(tenant.namespace, platform.run_id))
    allow = istio.authorization_policy(tenant.namespace, "allow-friend", platform.run_id,
                                       principals=[istio.principal(domain, tenant.namespace, "friend")],
                                       selector={"app": "server"})
    istio.apply(kube, allow)
    wait_until(lambda: platform.call(intruder, server, canary=canary(), timeout=5).status == 403,
               timeout=10, describe="the ALLOW policy to be enforced")
    allowed = platform.call(friend, server, canary=canary(), timeout=5)
    assert allowed.status == 200, allowed
    denied = platform.call(intruder, server, canary=canary(), timeout=5)
    assert (denied.status, denied.error) == (403, "http_403")

    deny = istio.authorization_policy(tenant.namespace, "deny-friend", platform.run_id, action="DENY",
                                      principals=[istio.principal(domain, tenant.namespace, "friend")])
    istio.apply(kube, deny)  # DENY wins even though the ALLOW policy matches
    wait_until(lambda: platform.call(friend, server, canary=canary(), timeout=5).status == 403,
               timeout=10, describe="the DENY policy to be enforced")


def test_each_sidecar_presents_its_own_spiffe_id_chaining_to_vault_within_cert_ttl(
    platform: Platform, settings: Settings, tenant: Tenant, deploy: Deploy
) -> None:
    admin = platform.vault_admin()
    layout = platform.vault_layout
    root = x509.load_pem_x509_certificate(admin.adapter.get(f"/v1/{layout.pki_root_path}/ca/pem").text.encode())
    intermediate = x509.load_pem_x509_certificate(
        admin.adapter.get(f"/v1/{layout.pki_int_path}/ca/pem").text.encode())
    backdate = admin.adapter.get(f"/v1/{layout.pki_int_path}/roles/{tenant.role}")["data"]["not_before_duration"]
    for workload in (deploy(tenant, "one"), deploy(tenant, "two")):
        cert = x509.load_der_x509_certificate(platform.peer_certificate(workload))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe(settings, workload)]
        cert.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        # Vault backdates notBefore for clock skew; the rest is the certificate's TTL.
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc - timedelta(seconds=int(backdate))
        assert lifetime <= settings.profile.setup.mesh.cert_ttl, lifetime


def test_rotation_keeps_established_connections(
    platform: Platform, settings: Settings, tenant: Tenant, deploy: Deploy
) -> None:
    server, client = deploy(tenant, "server"), deploy(tenant, "client")
    statuses = [platform.sidecar_status(w) for w in (server, client)]
    before = statuses[0].serial, statuses[1].serial
    # Until just before the first certificates expire: by then both must have
    # renewed, or the calls themselves would start failing. The live lifetime, not the profile's.
    window = min(s.remaining_s() for s in statuses) - 3
    if reason := over_budget(window, "both proxies' scheduled certificate rotation",
                             "use a test profile with cert_ttl of 1m or less to judge rotation under load"):
        pytest.skip(reason)
    steps = platform.session(client, server, count=int(window / 0.5), interval=0.5)
    after = platform.sidecar_status(server).serial, platform.sidecar_status(client).serial
    assert after[0] != before[0] and after[1] != before[1], "the certificates did not rotate during the session"
    assert [s.status for s in steps] == [200] * len(steps), steps
    assert all(s.reused for s in steps[1:]), "the connection was re-established during rotation"
