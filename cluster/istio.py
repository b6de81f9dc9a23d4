"""Istio policy objects, built and applied the same way on every platform."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cluster import meshrules
from cluster.kube import Kube, labels

GROUP, VERSION = "security.istio.io", "v1"
ROOT_NAMESPACE = meshrules.ROOT_NAMESPACE
NAMESPACE_AUTHZ = "allow-same-namespace"
DEFAULT_REVISION = "default"  # Istio's name for the control plane installed without --revision
CANARY_REVISION = "canary"  # what suites/upgrade installs TO as, the name istio.io's "Canary upgrades" gives it
REVISION_LABEL = "istio.io/rev"
INJECTION_LABEL = "istio-injection"


def peer_authentication(namespace: str, name: str, mode: str, run_id: str, *,
                        selector: Mapping[str, str] | None = None,
                        port_modes: Mapping[int, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": dict(selector)}
    if port_modes:
        spec["portLevelMtls"] = {str(port): {"mode": m} for port, m in port_modes.items()}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(run_id)}, "spec": spec}


def authorization_policy(namespace: str, name: str, run_id: str, *, action: str = "ALLOW",
                         principals: Sequence[str] | None = None,
                         selector: Mapping[str, str] | None = None,
                         rules: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"action": action}
    if selector:
        spec["selector"] = {"matchLabels": dict(selector)}
    if rules is not None:
        spec["rules"] = [dict(r) for r in rules]
    elif principals is not None:
        spec["rules"] = [{"from": [{"source": {"principals": list(principals)}}]}]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(run_id)}, "spec": spec}


NETWORKING = "networking.istio.io"


def destination_rule(namespace: str, name: str, host: str, run_id: str, *, traffic_policy: Mapping[str, Any],
                     subsets: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host, "trafficPolicy": dict(traffic_policy)}
    if subsets:
        spec["subsets"] = [dict(subset) for subset in subsets]
    return {"apiVersion": f"{NETWORKING}/{VERSION}", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(run_id)}, "spec": spec}


def virtual_service(namespace: str, name: str, host: str, run_id: str, *, subset: str) -> dict[str, Any]:
    """Every request to ``host`` goes to one subset of its DestinationRule."""
    return {"apiVersion": f"{NETWORKING}/{VERSION}", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(run_id)},
            "spec": {"hosts": [host], "http": [{"route": [{"destination": {"host": host, "subset": subset}}]}]}}


def _plural(obj: Mapping[str, Any]) -> str:
    return {"PeerAuthentication": "peerauthentications", "AuthorizationPolicy": "authorizationpolicies",
            "DestinationRule": "destinationrules", "VirtualService": "virtualservices"}[obj["kind"]]


def _group(obj: Mapping[str, Any]) -> tuple[str, str]:
    group, _, version = str(obj["apiVersion"]).partition("/")
    return group, version


def apply(kube: Kube, obj: Mapping[str, Any]) -> None:
    """Create or replace an Istio object (server-side, so the real CRD schema validates it)."""
    kube.apply_custom(*_group(obj), _plural(obj), obj)


def delete(kube: Kube, obj: Mapping[str, Any]) -> None:
    kube.delete_custom(*_group(obj), _plural(obj), obj)


def namespace_authorization(namespace: str, run_id: str) -> dict[str, Any]:
    """The baseline: only workloads of the namespace itself may call in."""
    return authorization_policy(namespace, NAMESPACE_AUTHZ, run_id,
                                rules=[{"from": [{"source": {"namespaces": [namespace]}}]}])


def namespace_policies(namespace: str, run_id: str, *, mtls_mode: str | None, authz: bool) -> list[dict[str, Any]]:
    """What the profile's setup puts in an application namespace."""
    found = []
    if mtls_mode is not None:
        found.append(peer_authentication(namespace, "default", mtls_mode, run_id))
    if authz:
        found.append(namespace_authorization(namespace, run_id))
    return found


def principal(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio writes principals without the spiffe:// scheme."""
    return f"{trust_domain}/ns/{namespace}/sa/{service_account}"


# -- revisions (istio.io "Canary upgrades") ---------------------------------------
def namespace_labels(revision: str) -> dict[str, str | None]:
    """The labels that put a namespace on ``revision`` (None removes one). istio-injection=enabled would win
    over istio.io/rev: the revision's webhook matches only where istio-injection DoesNotExist
    (manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml)."""
    if revision == DEFAULT_REVISION:
        return {INJECTION_LABEL: "enabled", REVISION_LABEL: None}
    return {INJECTION_LABEL: None, REVISION_LABEL: revision}


def injected_revision(pod: Mapping[str, Any]) -> str:
    """The revision recorded by the injector in a pod's sidecar.istio.io/status annotation ("" when none)."""
    status = ((pod.get("metadata") or {}).get("annotations") or {}).get("sidecar.istio.io/status")
    return str(json.loads(status).get("revision", "")) if status else ""


def syncz_proxies(text: str) -> set[str]:
    """The proxies ("pod.namespace") in istiod's debug ``syncz`` answer: a JSON array of one entry per
    connected proxy, each with its "proxy" id (pilot/pkg/xds/debug.go SyncStatus). ``istioctl x
    internal-debug syncz`` prints that answer indented, one after another when several istiods answer."""
    decoder, found, at = json.JSONDecoder(), set(), 0
    text = text.strip()
    while at < len(text):
        entries, end = decoder.raw_decode(text, at)
        found |= {str(entry["proxy"]) for entry in entries or [] if entry.get("proxy")}
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return found
