"""Istio's rules, proven live: each class of mistake is made on purpose, the check names the object in
force, and the real istiod and Envoys do what the rule says (cluster/meshrules.py cites the source)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes import client

from cluster import istio, meshchecks
from cluster.conformance import Finding
from cluster.kube import Kube
from cluster.platform import Platform, Workload
from cluster.settings import Settings
from cluster.tenancy import Tenant
from cluster.wait import wait_until

pytestmark = [pytest.mark.conformance, pytest.mark.cluster_fault]  # each makes a bad object other checks would see

Deploy = Callable[..., Workload]
REFUSED = ("reset", "refused", "tls_handshake", "timeout")


def canary() -> str:
    return f"tg-canary-{secrets.token_hex(8)}"


def _created(kube: Kube, obj: dict[str, object]) -> str:
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    found = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        istio.GROUP, istio.VERSION, meta["namespace"], "peerauthentications", meta["name"])
    return str(found["metadata"]["creationTimestamp"])


def test_the_peer_authentication_in_force_is_the_oldest_of_its_level(
    platform: Platform, settings: Settings, kube: Kube, new_tenant: Callable[..., Tenant], deploy: Deploy
) -> None:
    mesh, legacy = new_tenant(), new_tenant(meshed=False)
    server = deploy(mesh, "server")
    naked = deploy(legacy, "naked", meshed=False)
    # Without the namespace's baseline AuthorizationPolicy, the mTLS mode alone decides what plaintext gets.
    istio.delete(kube, istio.namespace_authorization(mesh.namespace, platform.run_id))
    older = istio.peer_authentication(mesh.namespace, "older-strict", "STRICT", platform.run_id)
    newer = istio.peer_authentication(mesh.namespace, "newer-permissive", "PERMISSIVE", platform.run_id)
    istio.apply(kube, older)
    first = _created(kube, older)
    # creationTimestamp has a one-second resolution: the newer one must be in a later second.
    wait_until(lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") > first, timeout=3, interval=0.05,
               describe="the next second")
    istio.apply(kube, newer)
    try:
        assert _in(mesh.namespace, meshchecks.mtls_findings(kube, settings.profile.policy, [mesh.namespace])) == []
        # Live: the older STRICT policy is in force, the newer PERMISSIVE one ignored (addPeerAuthentication).
        wait_until(lambda: platform.call(naked, server, canary=canary(), timeout=5).error in REFUSED,
                   timeout=10, interval=0.2, converge=10, describe="plaintext to stay refused with both policies")
        istio.delete(kube, older)
        findings = _in(mesh.namespace, meshchecks.mtls_findings(kube, settings.profile.policy, [mesh.namespace]))
        assert [(f.where, f.what) for f in findings] == [(
            f"namespace {mesh.namespace}",
            f"the namespace's mode is PERMISSIVE, decided by PeerAuthentication {mesh.namespace}/newer-permissive")]
        wait_until(lambda: platform.call(naked, server, canary=canary(), timeout=5).status == 200, timeout=10,
                   describe="the newer PERMISSIVE policy, now the oldest, to let plaintext in")
    finally:
        istio.delete(kube, older)
        istio.delete(kube, newer)


def _in(namespace: str, findings: list[Finding]) -> list[Finding]:
    """The findings about the namespace itself: the mesh-wide mode is judged by its own test, and a
    namespace policy takes precedence over it (ComposePeerAuthentication,
    pilot/pkg/security/authn/policy_applier.go)."""
    return [f for f in findings if f.where == f"namespace {namespace}"]


def _sent_in_the_clear(platform: Platform, src: Workload, dst: Workload) -> Callable[[], bool]:
    def check() -> bool:
        probe = canary()
        with platform.capture(dst) as wire:
            platform.call(src, dst, canary=probe, timeout=5)
        return wire.contains(probe)

    return check


def _answered_over_mtls(platform: Platform, src: Workload, dst: Workload) -> Callable[[], bool]:
    def check() -> bool:
        probe = canary()
        with platform.capture(dst) as wire:
            answered = platform.call(src, dst, canary=probe, timeout=5).status == 200
        return answered and not wire.contains(probe)

    return check


def test_a_destination_rule_that_turns_tls_off_sends_plaintext_where_it_is_in_force(
    platform: Platform, settings: Settings, kube: Kube, new_tenant: Callable[..., Tenant], deploy: Deploy
) -> None:
    """Which DestinationRule a client's proxy applies (cluster/meshrules.py destination_rule_in_force):
    one in the client's own namespace comes first; for one host in one namespace, the oldest rule's
    traffic policy wins and a newer rule adds only its subsets (each with its own policy)."""
    home, away = new_tenant(), new_tenant()
    server, neighbour, stranger = deploy(home, "server"), deploy(home, "neighbour"), deploy(away, "stranger")
    host = f"server.{home.namespace}.svc.cluster.local"
    off = {"tls": {"mode": "DISABLE"}}
    # Newer than the server's own rule (the Service's one-request-per-connection rule, made with it).
    newer = istio.destination_rule(home.namespace, "tls-off", host, platform.run_id, traffic_policy=off,
                                   subsets=[{"name": "probe", "labels": {"app": "server"}, "trafficPolicy": off}])
    overriding = istio.destination_rule(away.namespace, "tls-off", host, platform.run_id, traffic_policy=off)
    via_subset = istio.virtual_service(home.namespace, "via-probe", host, platform.run_id, subset="probe")
    assert meshchecks.destination_rule_findings(kube, [home.namespace, away.namespace]) == []
    istio.apply(kube, newer)
    istio.apply(kube, overriding)
    try:
        findings = {f.where: f.what for f in meshchecks.destination_rule_findings(kube, [home.namespace,
                                                                                          away.namespace])}
        mine, theirs = f"DestinationRule {home.namespace}/tls-off", f"DestinationRule {away.namespace}/tls-off"
        assert set(findings) == {mine, theirs}
        assert findings[mine].startswith("tls.mode DISABLE (subset probe) ")
        assert f"clients in {home.namespace} send plaintext" in findings[mine]
        assert findings[theirs].startswith("tls.mode DISABLE (trafficPolicy) ")
        assert f"clients in {away.namespace} send plaintext" in findings[theirs]
        # Live, in the client's namespace: its own rule is in force, and the request crosses in the clear
        # (the STRICT server refuses it).
        wait_until(_sent_in_the_clear(platform, stranger, server), timeout=15, interval=0.2,
                   describe="the stranger's proxy to apply its namespace's rule")
        # Live, beside the server: the newer rule's subset is merged in, with its own policy: routed to it,
        # the request is in the clear ...
        istio.apply(kube, via_subset)
        wait_until(_sent_in_the_clear(platform, neighbour, server), timeout=15, interval=0.2,
                   describe="the neighbour's proxy to route through the newer rule's subset")
        # ... while the newer rule's top-level policy is not: on the default route again, it is mTLS.
        istio.delete(kube, via_subset)
        wait_until(_answered_over_mtls(platform, neighbour, server), timeout=15, interval=0.2, converge=3,
                   describe="the neighbour's default route to stay mTLS under the older rule's policy")
    finally:
        for obj in (via_subset, overriding, newer):
            istio.delete(kube, obj)


def test_a_workload_that_bypasses_its_sidecar_is_reachable_in_plaintext(
    platform: Platform, settings: Settings, kube: Kube, new_tenant: Callable[..., Tenant], deploy: Deploy
) -> None:
    mesh, legacy = new_tenant(), new_tenant(meshed=False)
    naked = deploy(legacy, "naked", meshed=False)
    excluded = deploy(mesh, "excluded", annotations={"traffic.sidecar.istio.io/excludeInboundPorts": "8080"})
    opted_out = deploy(mesh, "opted-out", meshed=False)
    findings = {f.where: f.what for f in meshchecks.bypass_findings(kube, [mesh.namespace])}
    assert set(findings) == {f"pod {mesh.namespace}/excluded", f"pod {mesh.namespace}/opted-out"}
    assert "inbound ports ['8080'] bypass the sidecar" in findings[f"pod {mesh.namespace}/excluded"]
    assert "label sidecar.istio.io/inject=false" in findings[f"pod {mesh.namespace}/opted-out"]
    # Live: whatever PeerAuthentication says, plaintext gets in, and the capture sees it.
    for target in (excluded, opted_out):
        probe = canary()
        with platform.capture(target) as wire:
            answer = platform.call(naked, target, canary=probe, timeout=5)
        assert answer.status == 200 and wire.contains(probe), (target.name, answer)


def test_an_allow_rule_for_every_caller_opens_the_namespace(
    platform: Platform, kube: Kube, new_tenant: Callable[..., Tenant], deploy: Deploy
) -> None:
    target, foreign = new_tenant(), new_tenant()
    server = deploy(target, "server")
    stranger = deploy(foreign, "stranger")
    istio.apply(kube, istio.namespace_authorization(target.namespace, platform.run_id))  # the baseline
    wait_until(lambda: platform.call(stranger, server, canary=canary(), timeout=5).status == 403, timeout=10,
               describe="the namespace's baseline to refuse a foreign principal")
    everyone = istio.authorization_policy(target.namespace, "health", platform.run_id, rules=[{}])
    istio.apply(kube, everyone)
    try:
        findings = meshchecks.authz_findings(kube, [target.namespace])
        assert [f.where for f in findings] == [f"AuthorizationPolicy {target.namespace}/health"]
        assert "rule 0 allows any caller, plaintext included (no from)" in findings[0].what
        # Live: Istio ORs the ALLOW rules, so the namespace's own narrow policy no longer keeps anyone out.
        wait_until(lambda: platform.call(stranger, server, canary=canary(), timeout=5).status == 200, timeout=10,
                   describe="the rule for every caller to let the foreign principal in")
    finally:
        istio.delete(kube, everyone)
