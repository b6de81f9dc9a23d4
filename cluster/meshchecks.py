"""Conformance checks of the live Istio objects, by Istio's own rules (cluster/meshrules.py).

Each finding names the object in force (the PeerAuthentication that decides a mode, the
AuthorizationPolicy rule, the DestinationRule, the Pod and its annotation), not only where a
problem showed, so that whoever reads it at 3 a.m. knows what to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client

from cluster.conformance import Finding
from cluster.istio import GROUP, NETWORKING, ROOT_NAMESPACE, VERSION
from cluster.kube import Kube
from cluster.meshrules import (
    STRICT,
    DestRule,
    PeerAuthn,
    bypassed_inbound_ports,
    destination_rule_in_force,
    host_namespaces,
    mtls_in_force,
    rules_matching_everyone,
    tls_disabled,
    tls_disabled_in_force,
)
from cluster.profile import Policy

STRICT_FIX = "make it STRICT (or remove the override, so that the mesh-wide STRICT policy applies)"


def _custom(kube: Kube, group: str, plural: str) -> list[dict[str, Any]]:
    return list(client.CustomObjectsApi(kube.api).list_cluster_custom_object(group, VERSION, plural)["items"])


def peer_authentications(kube: Kube) -> list[PeerAuthn]:
    return [PeerAuthn.of(obj) for obj in _custom(kube, GROUP, "peerauthentications")]


def _pods(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    pods = kube.core.list_namespaced_pod(namespace).items
    return [kube.api.sanitize_for_serialization(pod) for pod in pods if not pod.metadata.deletion_timestamp]


def mtls_findings(kube: Kube, policy: Policy, namespaces: Iterable[str]) -> list[Finding]:
    """Every place the mode in force is not STRICT: the mesh (the root namespace's policy is judged
    even though the namespace itself is exempt), each namespace, each workload policy's selection,
    each live pod and each port, naming the PeerAuthentication that decides it."""
    if not policy.require_strict_mtls:
        return []
    policies = peer_authentications(kube)
    findings = []
    mesh = mtls_in_force(policies, ROOT_NAMESPACE, {})
    if mesh.mode != STRICT:
        findings.append(Finding(f"the mesh-wide mode is {mesh.mode}, decided by {mesh.decided_by}",
                                f"namespace {ROOT_NAMESPACE} (the mesh)",
                                "apply a PeerAuthentication without a selector in the root namespace, mtls.mode "
                                "STRICT (the oldest such policy is the one in force)"))
    for namespace in namespaces:
        space = mtls_in_force(policies, namespace, {})
        if space.mode != STRICT:
            findings.append(Finding(f"the namespace's mode is {space.mode}, decided by {space.decided_by}",
                                    f"namespace {namespace}", STRICT_FIX))
        selections = [(f"pods selected by {p.where}", dict(p.selector or {})) for p in policies
                      if p.namespace == namespace and p.selector]
        selections += [(f"pod {namespace}/{pod['metadata']['name']}", pod["metadata"].get("labels") or {})
                       for pod in _pods(kube, namespace)]
        for where, labels in selections:
            found = mtls_in_force(policies, namespace, labels)
            if found.decided_by == space.decided_by and not found.port_modes:
                continue  # the namespace's finding (if any) already says it
            if found.mode != STRICT:
                findings.append(Finding(f"mode {found.mode}, decided by {found.decided_by}", where, STRICT_FIX))
            if found.plaintext_ports():
                findings.append(Finding(f"ports {found.plaintext_ports()} are not STRICT, decided by "
                                        f"{found.port_decided_by}", where, "remove the port-level override"))
    return _unique(findings)


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for finding in findings:
        if (finding.what, finding.where) not in seen:
            seen.add((finding.what, finding.where))
            kept.append(finding)
    return kept


def authz_findings(kube: Kube, namespaces: Iterable[str]) -> list[Finding]:
    """Every application namespace needs an ALLOW policy of its own (with none, Istio allows all),
    and no ALLOW rule, in it or in the root namespace (which applies mesh-wide), may match every
    caller: Istio ORs the rules of ALLOW policies, so one such rule opens the workloads to all."""
    objects = _custom(kube, GROUP, "authorizationpolicies")
    wanted = list(namespaces)
    findings = []
    covered = {o["metadata"]["namespace"] for o in objects if str((o.get("spec") or {}).get("action") or "ALLOW")
               == "ALLOW"}
    findings += [Finding("no ALLOW AuthorizationPolicy: Istio allows every caller", f"namespace {ns}",
                         "apply an ALLOW AuthorizationPolicy naming the principals or namespaces that may call in")
                 for ns in wanted if ns not in covered]
    for obj in objects:
        namespace = obj["metadata"]["namespace"]
        if namespace != ROOT_NAMESPACE and namespace not in wanted:
            continue
        scope = "every namespace of the mesh" if namespace == ROOT_NAMESPACE else f"namespace {namespace}"
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
        target = f"workloads {selector} of {scope}" if selector else scope
        for index, why in rules_matching_everyone(obj):
            findings.append(Finding(
                f"rule {index} allows {why} into {target}; Istio ORs ALLOW rules, so the others do not narrow it",
                f"AuthorizationPolicy {namespace}/{obj['metadata']['name']}",
                "name the principals or namespaces in the rule's from.source"))
    return findings


def destination_rule_findings(kube: Kube, namespaces: Iterable[str]) -> list[Finding]:
    """DestinationRules that turn TLS off toward an application namespace's services, where they are in
    force (meshrules.destination_rule_in_force: a newer rule for the same host, or one a closer
    namespace overrides, changes nothing): those clients send plaintext, which a STRICT server refuses
    and a PERMISSIVE one takes. Clients are judged from the application namespaces and the rule's own."""
    wanted = sorted(set(namespaces))
    rules = [DestRule.of(obj) for obj in _custom(kube, NETWORKING, "destinationrules")]
    findings = []
    for rule in rules:
        if not tls_disabled({"spec": rule.spec}):
            continue
        target = host_namespaces(rule.host, rule.namespace)
        services = wanted if target == "*" else [target] if target in wanted else []
        clients: dict[str, list[str]] = {}
        for service_ns in services:
            # A wildcard host stands for any service it matches that no more specific rule names.
            hostname = rule.host.replace("*", "tg-any") if "*" in rule.host else rule.host
            if "*" in rule.host and not hostname.endswith(f".{service_ns}.svc.cluster.local"):
                hostname = f"tg-any.{service_ns}.svc.cluster.local"
            for client_ns in sorted({*wanted, rule.namespace}):
                in_force = destination_rule_in_force(rules, client_namespace=client_ns, hostname=hostname,
                                                     service_namespace=service_ns,
                                                     client_labels=rule.selector)
                for where in tls_disabled_in_force(rule, in_force):
                    clients.setdefault(where, []).append(client_ns)
        for where, namespaces_in_force in clients.items():
            findings.append(Finding(
                f"tls.mode DISABLE ({where}) toward {rule.spec.get('host')}: the proxies of clients in "
                f"{', '.join(sorted(set(namespaces_in_force)))} send plaintext",
                rule.where, "drop the tls setting (auto mTLS) or set tls.mode ISTIO_MUTUAL"))
    return findings


def bypass_findings(kube: Kube, namespaces: Iterable[str]) -> list[Finding]:
    """Workloads in a meshed namespace that bypass their sidecar: no sidecar at all (the inject label or
    annotation), or inbound ports it does not capture. Either is reachable in plaintext, whatever
    PeerAuthentication says."""
    findings = []
    for namespace in namespaces:
        for pod in _pods(kube, namespace):
            meta = pod["metadata"]
            where = f"pod {namespace}/{meta['name']}"
            meshed, ports = bypassed_inbound_ports(pod)
            if not meshed:
                why = _inject_opt_out(meta)
                findings.append(Finding(f"runs without a sidecar ({why}): reachable in plaintext", where,
                                        "remove the opt-out, or move the workload out of the meshed namespace"))
            elif ports:
                annotation = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("traffic.")}
                findings.append(Finding(f"inbound ports {ports} bypass the sidecar ({annotation}): reachable in "
                                        "plaintext", where, "remove the traffic.sidecar.istio.io exclusion"))
    return findings


def _inject_opt_out(meta: Mapping[str, Any]) -> str:
    """pkg/kube/inject/inject.go injectRequired: the label wins over the annotation."""
    label = (meta.get("labels") or {}).get("sidecar.istio.io/inject")
    annotation = (meta.get("annotations") or {}).get("sidecar.istio.io/inject")
    if label is not None:
        return f"label sidecar.istio.io/inject={label}"
    if annotation is not None:
        return f"annotation sidecar.istio.io/inject={annotation}"
    return "not injected"


def mode_in_force(kube: Kube, namespace: str, labels: Mapping[str, str]) -> str:
    """For a live probe's finding: the mode a pod gets and the object that decides it."""
    found = mtls_in_force(peer_authentications(kube), namespace, labels)
    return f"{found.mode}, decided by {found.decided_by}"
