"""Istio's PeerAuthentication and AuthorizationPolicy, compiled for one pod.

This is the part of istiod the local platform needs, as pure functions:
the local istiod feeds it the live objects and pushes the result to each
sidecar. Only a subset of the API is supported; a field outside it is
reported in ``broken`` and fails closed (an ALLOW rule that never matches,
a DENY rule that always does, STRICT mTLS), never misread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROOT_NAMESPACE = "istio-system"
MODES = ("STRICT", "PERMISSIVE", "DISABLE")
_SOURCE_FIELDS = {"principals": "principals", "notPrincipals": "not_principals",
                  "namespaces": "namespaces", "notNamespaces": "not_namespaces"}

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str
    service_account: str
    meshed: bool


@dataclass
class PodConfig:
    self_id: str
    mode: str = "PERMISSIVE"
    port_modes: dict[str, str] = field(default_factory=dict)
    allow: list[dict[str, Any]] | None = None
    deny: list[dict[str, Any]] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def as_json(self, generation: int, trust_domain: str, peers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        return {"generation": generation, "trust_domain": trust_domain, "self": self.self_id,
                "mode": self.mode, "port_modes": self.port_modes, "allow": self.allow, "deny": self.deny,
                "peers": peers, "broken": self.broken}


def _name(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _selects(obj: Obj, pod: PodView) -> bool | None:
    """True/False for a selector that does/doesn't match; None for no selector."""
    selector = (obj.get("spec") or {}).get("selector")
    if not selector:
        return None
    wanted = selector.get("matchLabels") or {}
    return all(pod.labels.get(k) == v for k, v in wanted.items())


def _created(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def _oldest(objs: Iterable[Obj]) -> Obj | None:
    ordered = sorted(objs, key=lambda o: (_created(o), _name(o)))
    return ordered[0] if ordered else None


def peer_authentication(pod: PodView, policies: Iterable[Obj], config: PodConfig) -> None:
    """Workload selector, then namespace, then the root namespace; port-level overrides."""
    policies = list(policies)
    in_ns = [p for p in policies if (p.get("metadata") or {}).get("namespace") == pod.namespace]
    root = [p for p in policies if (p.get("metadata") or {}).get("namespace") == ROOT_NAMESPACE
            and _selects(p, pod) is None]
    workload = _oldest(p for p in in_ns if _selects(p, pod))
    namespace = _oldest(p for p in in_ns if _selects(p, pod) is None)
    mesh = _oldest(root)
    mode = "PERMISSIVE"  # Istio's default when nothing says otherwise
    for policy in (mesh, namespace, workload):
        if policy is None:
            continue
        spec = dict(policy.get("spec") or {})
        unknown = set(spec) - {"selector", "mtls", "portLevelMtls"}
        if unknown:
            config.broken.append(f"PeerAuthentication {_name(policy)}: unsupported field spec.{sorted(unknown)[0]}")
            mode = "STRICT"
            continue
        declared = (spec.get("mtls") or {}).get("mode", "UNSET")
        if declared in MODES:
            mode = declared
        elif declared != "UNSET":
            config.broken.append(f"PeerAuthentication {_name(policy)}: unknown mode {declared}")
            mode = "STRICT"
        if policy is workload:
            for port, setting in (spec.get("portLevelMtls") or {}).items():
                port_mode = (setting or {}).get("mode", "UNSET")
                config.port_modes[str(port)] = port_mode if port_mode in MODES else mode
    config.mode = mode


def _compile_rule(policy: Obj, index: int, rule: Obj, action: str, config: PodConfig) -> dict[str, Any]:
    unknown = set(rule) - {"from"}
    sources: list[dict[str, list[str]]] = []
    for entry in rule.get("from") or []:
        source = (entry or {}).get("source") or {}
        unknown |= {f"from.source.{k}" for k in set(source) - set(_SOURCE_FIELDS)}
        sources.append({ours: list(source.get(theirs) or []) for theirs, ours in _SOURCE_FIELDS.items()})
    if unknown:
        config.broken.append(f"AuthorizationPolicy {_name(policy)}: unsupported field "
                             f"spec.rules[{index}].{sorted(unknown)[0]}")
        return {"sources": [], "matches_all": action == "DENY", "matches_none": action != "DENY"}
    return {"sources": sources, "matches_all": not sources, "matches_none": False}


def authorization(pod: PodView, policies: Iterable[Obj], config: PodConfig) -> None:
    """DENY before ALLOW; once any ALLOW applies, a request must match one of its rules."""
    for policy in sorted(policies, key=_name):
        namespace = (policy.get("metadata") or {}).get("namespace")
        if namespace not in (pod.namespace, ROOT_NAMESPACE) or _selects(policy, pod) is False:
            continue
        spec = dict(policy.get("spec") or {})
        action = spec.get("action", "ALLOW")
        unknown = set(spec) - {"selector", "action", "rules"}
        if action not in ("ALLOW", "DENY") or unknown:
            what = f"action {action}" if action not in ("ALLOW", "DENY") else f"field spec.{sorted(unknown)[0]}"
            config.broken.append(f"AuthorizationPolicy {_name(policy)}: unsupported {what}")
            config.deny.append({"sources": [], "matches_all": True, "matches_none": False})
            continue
        rules = [_compile_rule(policy, i, rule or {}, action, config) for i, rule in enumerate(spec.get("rules") or [])]
        if action == "DENY":
            config.deny.extend(rules)
        else:
            config.allow = (config.allow or []) + rules


def compile_pod(pod: PodView, trust_domain: str, peer_auth: Iterable[Obj], authz: Iterable[Obj]) -> PodConfig:
    config = PodConfig(self_id=f"spiffe://{trust_domain}/ns/{pod.namespace}/sa/{pod.service_account}")
    peer_authentication(pod, peer_auth, config)
    authorization(pod, authz, config)
    return config


def peers(pods: Iterable[PodView], trust_domain: str) -> dict[str, dict[str, Any]]:
    return {pod.ip: {"spiffe": f"spiffe://{trust_domain}/ns/{pod.namespace}/sa/{pod.service_account}",
                     "meshed": pod.meshed} for pod in pods if pod.ip}
