"""Conformance checks that read the live configuration and judge it against a policy.

They never read the profile's setup: the same checks judge a cluster that
someone else configured. Each finding says what was found, where, and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from cluster.istio import GROUP, ROOT_NAMESPACE, VERSION
from cluster.kube import Kube
from cluster.profile import Policy


@dataclass(frozen=True)
class Finding:
    what: str
    where: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; fix: {self.fix}"


def mtls_findings(kube: Kube, policy: Policy, namespaces: list[str] | None = None) -> list[Finding]:
    """Every PeerAuthentication that lets plaintext in, and a mesh without a STRICT default."""
    if not policy.require_strict_mtls:
        return []
    custom = client.CustomObjectsApi(kube.api)
    objects = custom.list_cluster_custom_object(GROUP, VERSION, "peerauthentications")["items"]
    findings = []
    mesh_wide = [o for o in objects if o["metadata"]["namespace"] == ROOT_NAMESPACE
                 and not (o.get("spec") or {}).get("selector")]
    if not any((o.get("spec") or {}).get("mtls", {}).get("mode") == "STRICT" for o in mesh_wide):
        findings.append(Finding(
            "no mesh-wide PeerAuthentication with mode STRICT", f"namespace {ROOT_NAMESPACE}",
            "apply a PeerAuthentication without a selector in the root namespace, mtls.mode STRICT"))
    for obj in objects:
        namespace = obj["metadata"]["namespace"]
        if namespace in policy.exempt_namespaces or (namespaces is not None and namespace not in namespaces):
            continue
        spec = obj.get("spec") or {}
        where = f"PeerAuthentication {namespace}/{obj['metadata']['name']}"
        mode = (spec.get("mtls") or {}).get("mode", "UNSET")
        if mode in ("PERMISSIVE", "DISABLE"):
            findings.append(Finding(f"mtls.mode is {mode}", where, "set mtls.mode to STRICT (or remove the override)"))
        for port, setting in (spec.get("portLevelMtls") or {}).items():
            port_mode = (setting or {}).get("mode", "UNSET")
            if port_mode in ("PERMISSIVE", "DISABLE"):
                findings.append(Finding(f"port {port} mtls.mode is {port_mode}", where,
                                        "remove the port-level override or set it to STRICT"))
    return findings
