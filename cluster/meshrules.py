"""Istio's own rules for which policy is in force, read the way istiod reads them.

Pure functions over the objects as the API server returns them. Each rule is Istio's
(istio.io/istio release-1.31, the version the local platform builds), cited where it is
implemented there; conformance (cluster/meshchecks.py) judges the live objects with them,
and the real istiod enforces the same objects on the local platform's proxies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

UNSET, STRICT, PERMISSIVE, DISABLE = "UNSET", "STRICT", "PERMISSIVE", "DISABLE"
DEFAULT_MODE = PERMISSIVE  # ComposePeerAuthentication starts from MTLSPermissive
ROOT_NAMESPACE = "istio-system"  # meshConfig.rootNamespace, by default the namespace istiod runs in
# What an in-mesh client offers in its TLS handshake when metadata exchange is off (ALPNInMesh,
# pilot/pkg/networking/util/util.go). A PERMISSIVE inbound listener terminates TLS only for these ALPNs
# (allIstioMtlsALPNs, pilot/pkg/networking/core/listener.go); other TLS goes to the app as it is.
IN_MESH_ALPN = ("istio",)


@dataclass(frozen=True)
class PeerAuthn:
    """A PeerAuthentication: its mode (UNSET when ``mtls`` or its mode is missing) and port modes."""

    namespace: str
    name: str
    created: str  # creationTimestamp, RFC 3339 (one-second resolution)
    selector: Mapping[str, str] | None
    mode: str
    port_modes: Mapping[int, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"PeerAuthentication {self.namespace}/{self.name}"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> PeerAuthn:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels")
        ports = {int(port): str((setting or {}).get("mode") or UNSET)
                 for port, setting in (spec.get("portLevelMtls") or {}).items()}
        return cls(str(meta["namespace"]), str(meta["name"]), str(meta.get("creationTimestamp") or ""),
                   dict(selector) if selector else None, str((spec.get("mtls") or {}).get("mode") or UNSET), ports)


def _oldest(policies: Iterable[PeerAuthn]) -> PeerAuthn | None:
    """pilot/pkg/model/config.go configCompareByCreationTime: creation time, then name, then namespace."""
    return min(policies, key=lambda p: (p.created, p.name, p.namespace), default=None)


@dataclass(frozen=True)
class MtlsInForce:
    """The mode a workload (or a namespace, for a pod no workload policy selects) gets, and why."""

    mode: str
    decided_by: str  # the PeerAuthentication in force, or Istio's default
    port_modes: Mapping[int, str] = field(default_factory=dict)
    port_decided_by: str = ""

    def plaintext_ports(self) -> list[int]:
        return sorted(port for port, mode in self.port_modes.items() if mode != STRICT)


def mtls_in_force(policies: Sequence[PeerAuthn], namespace: str, labels: Mapping[str, str], *,
                  root_namespace: str = "istio-system") -> MtlsInForce:
    """pilot/pkg/security/authn/policy_applier.go ComposePeerAuthentication, with the candidates of
    pilot/pkg/model/authentication.go: the mesh level is the oldest selector-less policy of the root
    namespace; the namespace level the oldest selector-less one of the workload's namespace (extra
    ones are ignored, addPeerAuthentication); the workload level the oldest policy of its namespace
    whose selector its labels match (selector policies in the root namespace are ignored). Each
    level that is not UNSET overrides the one above, starting from PERMISSIVE. Port-level modes come
    from the workload-level policy alone; an UNSET port takes the workload's mode."""
    mesh = _oldest(p for p in policies if p.namespace == root_namespace and not p.selector)
    space = _oldest(p for p in policies if p.namespace == namespace and not p.selector) \
        if namespace != root_namespace else None
    workload = _oldest(p for p in policies if p.namespace == namespace and p.namespace != root_namespace
                       and p.selector and all(labels.get(k) == v for k, v in p.selector.items()))
    mode, decided_by = DEFAULT_MODE, "no PeerAuthentication sets a mode: Istio's default, PERMISSIVE"
    for level in (mesh, space, workload):
        if level is not None and level.mode != UNSET:
            mode, decided_by = level.mode, level.where
    ports: dict[int, str] = {}
    if workload is not None:
        ports = {port: mode if port_mode == UNSET else port_mode for port, port_mode in workload.port_modes.items()}
    return MtlsInForce(mode, decided_by, ports, workload.where if workload is not None and ports else "")


# -- AuthorizationPolicy ---------------------------------------------------------------
def _source_matches_everyone(source: Mapping[str, Any]) -> str:
    """Why a source matches every caller ('' when it does not). An empty source matches any caller,
    plaintext included; "*" in principals or namespaces any caller with a mesh identity
    (pilot/pkg/security/authz/model/model.go, principal.go: "*" becomes a presence match)."""
    narrowing = ("principals", "namespaces", "ipBlocks", "remoteIpBlocks", "requestPrincipals")
    if not any(source.get(key) for key in narrowing):
        return "any caller, plaintext included"
    if "*" in (source.get("principals") or []) or "*" in (source.get("namespaces") or []):
        others = [key for key in ("ipBlocks", "remoteIpBlocks", "requestPrincipals") if source.get(key)]
        return "" if others else "any caller with a mesh identity, from any namespace"
    return ""


def rules_matching_everyone(policy: Mapping[str, Any]) -> list[tuple[int, str]]:
    """ALLOW rules (index, why) that match every caller. Istio ORs the rules of every ALLOW policy
    of a workload (pilot/pkg/security/authz/builder/builder.go build), so one such rule opens the
    workload to every caller, for the operations it names. A rule with no ``from`` matches any
    source; a policy with no rules at all denies everything (rbacPolicyMatchNever) and is not one."""
    spec = policy.get("spec") or {}
    if str(spec.get("action") or "ALLOW") != "ALLOW":
        return []
    found = []
    for index, rule in enumerate(spec.get("rules") or []):
        sources = (rule or {}).get("from") or []
        if not sources:
            found.append((index, "any caller, plaintext included (no from)"))
            continue
        for item in sources:
            why = _source_matches_everyone((item or {}).get("source") or {})
            if why:
                found.append((index, why))
                break
    return found


# -- DestinationRule --------------------------------------------------------------------
def tls_disabled(rule: Mapping[str, Any]) -> list[str]:
    """Where a DestinationRule turns TLS off: an explicit mode wins over auto mTLS
    (pilot/pkg/networking/core/cluster_tls.go buildUpstreamTLSSettings), and DISABLE means no TLS
    socket at all: the client's proxy sends plaintext."""
    spec = rule.get("spec") or {}
    found = []

    def check(policy: Mapping[str, Any] | None, where: str) -> None:
        if not policy:
            return
        if ((policy.get("tls") or {}).get("mode")) == DISABLE:
            found.append(where)
        for setting in policy.get("portLevelSettings") or []:
            if ((setting.get("tls") or {}).get("mode")) == DISABLE:
                found.append(f"{where} port {(setting.get('port') or {}).get('number')}")

    check(spec.get("trafficPolicy"), "trafficPolicy")
    for subset in spec.get("subsets") or []:
        check(subset.get("trafficPolicy"), f"subset {subset.get('name')}")
    return found


def host_namespaces(host: str, rule_namespace: str, domain: str = "cluster.local") -> str | None:
    """The namespace a DestinationRule host names ('*' for every namespace, None for none of the
    cluster's services). A name without a dot is relative to the rule's namespace; any other is
    taken as written (pilot/pkg/model/config.go ResolveShortnameToFQDN)."""
    if host in ("*", f"*.svc.{domain}", f"*.{domain}"):
        return "*"
    suffix = f".svc.{domain}"
    if host.endswith(suffix):
        parts = host.removesuffix(suffix).split(".")
        return parts[-1] if len(parts) >= 2 else None
    return rule_namespace if "." not in host else None


@dataclass(frozen=True)
class DestRule:
    """A DestinationRule as istiod indexes it: host resolved to a name in the cluster's domain."""

    namespace: str
    name: str
    created: str  # creationTimestamp, RFC 3339 (one-second resolution)
    host: str
    export_to: frozenset[str]
    selector: Mapping[str, str] | None
    spec: Mapping[str, Any]

    @classmethod
    def of(cls, obj: Mapping[str, Any], domain: str = "cluster.local") -> DestRule:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        host = str(spec.get("host") or "")
        if "." not in host and host != "*":  # ResolveShortnameToFQDN
            host = f"{host}.{meta['namespace']}.svc.{domain}"
        selector = (spec.get("workloadSelector") or {}).get("matchLabels")
        # A rule with a workload selector is never exported (setDestinationRules).
        export_to = frozenset({"."}) if selector is not None else frozenset(spec.get("exportTo") or [])
        return cls(meta["namespace"], meta["name"], str(meta.get("creationTimestamp") or ""), host, export_to,
                   dict(selector) if selector is not None else None, spec)

    @property
    def where(self) -> str:
        return f"DestinationRule {self.namespace}/{self.name}"

    def _sort_key(self) -> tuple[bool, str, str, str]:
        # sortConfigBySelectorAndCreationTime: selector rules first, then oldest, then name, then namespace.
        return (self.selector is None, self.created, self.name, self.namespace)

    def _local(self) -> bool:
        return not self.export_to or bool({"*", ".", self.namespace} & self.export_to)

    def _private_only(self) -> bool:
        # With Istio's default exportTo ("*": meshConfig.defaultDestinationRuleExportTo unset).
        return len(self.export_to) == 1 and bool({".", self.namespace} & self.export_to)

    def _visible_to(self, namespace: str) -> bool:
        return (not self.export_to or "*" in self.export_to or namespace in self.export_to
                or ("." in self.export_to and namespace == self.namespace))


def _host_matches(pattern: str, hostname: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return hostname.endswith(pattern[1:])
    return pattern == hostname


def _most_specific(rules: Sequence[DestRule], hostname: str) -> list[DestRule]:
    """The rules under the most specific host that matches (pilot/pkg/model MostSpecificHostMatch:
    an exact name first, then the longest wildcard)."""
    matching = [rule for rule in rules if _host_matches(rule.host, hostname)]
    if not matching:
        return []
    best = max(matching, key=lambda rule: (not rule.host.startswith("*"), len(rule.host)))
    return [rule for rule in matching if rule.host == best.host]


def _selector_key(rule: DestRule) -> tuple[tuple[str, str], ...] | None:
    return tuple(sorted(rule.selector.items())) if rule.selector is not None else None


def _consolidated(rules: Sequence[DestRule]) -> list[list[DestRule]]:
    """Rules of one host merged as mergeDestinationRule merges them (pilot/pkg/model/destination_rule.go):
    in sort order, a rule joins the first group with the same exportTo and the same (or no) selector;
    the group's top-level trafficPolicy is its first rule's that has one, and a subset name keeps its
    first definition."""
    groups: list[list[DestRule]] = []
    for rule in sorted(rules, key=DestRule._sort_key):
        home = next((g for g in groups if g[0].export_to == rule.export_to
                     and _selector_key(g[0]) == _selector_key(rule)), None)
        if home is None:
            groups.append([rule])
        else:
            home.append(rule)
    return groups


@dataclass(frozen=True)
class DestRuleInForce:
    """What a client's proxy applies toward one host: the rule whose top-level trafficPolicy won (None when
    no rule has one) and, per subset name, the rule that defined it first."""

    traffic_policy_from: DestRule | None
    subsets_from: Mapping[str, DestRule]


def destination_rule_in_force(rules: Iterable[DestRule], *, client_namespace: str, hostname: str,
                              service_namespace: str, root_namespace: str = ROOT_NAMESPACE,
                              client_labels: Mapping[str, str] | None = None) -> DestRuleInForce | None:
    """The DestinationRule a proxy in ``client_namespace`` applies toward ``hostname``
    (pilot/pkg/model/push_context.go destinationRule): its own namespace's rules first (or, in the root
    namespace, the root's private ones), then those the service's namespace exports to it, then those the
    root namespace exports. Within the first level that has a match: the most specific host, rules merged
    first-created-wins. A rule with a workload selector applies only to the workloads it selects. None
    when no rule matches."""
    everything = list(rules)

    def selects(rule: DestRule) -> bool:
        labels = client_labels or {}
        return rule.selector is None or all(labels.get(k) == v for k, v in rule.selector.items())

    if client_namespace != root_namespace:
        first = [r for r in everything if r.namespace == client_namespace and r._local() and selects(r)]
    else:
        first = [r for r in everything if r.namespace == root_namespace and r._private_only() and selects(r)]
    levels = [first]
    for owner in (service_namespace, root_namespace):
        levels.append([r for r in everything if r.namespace == owner and not r._private_only()
                       and r._visible_to(client_namespace)])
    for level in levels:
        matched = _most_specific(level, hostname)
        if not matched:
            continue
        group = _consolidated(matched)[0]  # several groups only with differing exportTo or selectors
        policy_from = next((rule for rule in group if (rule.spec.get("trafficPolicy") or None) is not None), None)
        subsets: dict[str, DestRule] = {}
        for rule in group:
            for subset in rule.spec.get("subsets") or []:
                subsets.setdefault(str(subset.get("name")), rule)
        return DestRuleInForce(policy_from, subsets)
    return None


def tls_disabled_in_force(rule: DestRule, in_force: DestRuleInForce | None) -> list[str]:
    """Where ``rule`` turns TLS off in what the proxy applies (tls_disabled), only for the parts of it in force."""
    if in_force is None:
        return []
    parts = []
    for where in tls_disabled({"spec": rule.spec}):
        if where.startswith("subset "):
            name = where.removeprefix("subset ").split(" port ")[0]
            if in_force.subsets_from.get(name) is rule:
                parts.append(where)
        elif in_force.traffic_policy_from is rule:
            parts.append(where)
    return parts


# -- sidecar bypass ------------------------------------------------------------------------
def _flag(args: Sequence[str], name: str) -> str | None:
    return str(args[args.index(name) + 1]) if name in args and args.index(name) + 1 < len(args) else None


ISTIO_OWN_PORTS = {"15090", "15021", "15020"}


def bypassed_inbound_ports(pod: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """(has a sidecar, the inbound ports it does not capture), read from what the injector wrote:
    istio-init's istio-iptables arguments (-b included ports, '*' for all; -d excluded ones;
    tools/istio-iptables/pkg/capture/run.go). A port that is not captured never reaches Envoy, so
    PeerAuthentication cannot make it STRICT."""
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    if not any(c.get("name") == "istio-proxy" for c in containers):
        return False, []
    init = next((c for c in spec.get("initContainers") or [] if c.get("name") == "istio-init"), None)
    if init is None:
        return True, []
    args = [str(a) for a in init.get("args") or []]
    included = _flag(args, "-b")
    if included is None:
        included = "*"
    if included == "":
        return True, ["every port (no inbound port is captured)"]
    if included != "*":
        return True, [f"all but {included}"]
    excluded = [p for p in (_flag(args, "-d") or "").split(",") if p and p not in ISTIO_OWN_PORTS]
    return True, excluded
