"""Istio policy objects, built and applied the same way on every platform."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster.kube import Kube, labels

GROUP, VERSION = "security.istio.io", "v1"
ROOT_NAMESPACE = "istio-system"


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


def _plural(obj: Mapping[str, Any]) -> str:
    return {"PeerAuthentication": "peerauthentications", "AuthorizationPolicy": "authorizationpolicies"}[obj["kind"]]


def apply(kube: Kube, obj: Mapping[str, Any]) -> None:
    """Create or replace an Istio object (server-side, so the real CRD schema validates it)."""
    custom = client.CustomObjectsApi(kube.api)
    meta = obj["metadata"]
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], _plural(obj), dict(obj))
    except ApiException as err:
        if err.status != 409:
            raise
        current = custom.get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], _plural(obj), meta["name"])
        body = {**obj, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
        custom.replace_namespaced_custom_object(GROUP, VERSION, meta["namespace"], _plural(obj), meta["name"], body)


def delete(kube: Kube, obj: Mapping[str, Any]) -> None:
    custom = client.CustomObjectsApi(kube.api)
    meta = obj["metadata"]
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], _plural(obj), meta["name"])
    except ApiException as err:
        if err.status != 404:
            raise


def principal(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio writes principals without the spiffe:// scheme."""
    return f"{trust_domain}/ns/{namespace}/sa/{service_account}"
