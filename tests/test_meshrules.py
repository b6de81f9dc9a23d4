"""Istio's rules for what is in force, as istiod applies them (cluster/meshrules.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cluster.meshrules import (
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

FIXTURES = Path(__file__).parent / "fixtures" / "istio"


def pa(namespace: str, name: str, mode: str, *, created: str = "2026-12-01T00:00:00Z",
       selector: dict[str, str] | None = None, ports: dict[int, str] | None = None) -> PeerAuthn:
    return PeerAuthn(namespace, name, created, selector, mode, ports or {})


MESH = pa("istio-system", "default", "STRICT")


def test_the_narrowest_level_that_sets_a_mode_wins() -> None:
    assert mtls_in_force([MESH], "app", {}).mode == "STRICT"
    space = pa("app", "default", "PERMISSIVE")
    found = mtls_in_force([MESH, space], "app", {})
    assert (found.mode, found.decided_by) == ("PERMISSIVE", "PeerAuthentication app/default")
    workload = pa("app", "web", "STRICT", selector={"app": "web"})
    assert mtls_in_force([MESH, space, workload], "app", {"app": "web"}).mode == "STRICT"
    assert mtls_in_force([MESH, space, workload], "app", {"app": "db"}).mode == "PERMISSIVE"
    # UNSET inherits from the level above.
    assert mtls_in_force([MESH, pa("app", "default", "UNSET")], "app", {}).mode == "STRICT"


def test_without_any_policy_istio_is_permissive() -> None:
    found = mtls_in_force([], "app", {})
    assert found.mode == "PERMISSIVE" and "Istio's default" in found.decided_by


def test_the_oldest_of_several_at_one_level_is_in_force_and_the_others_are_ignored() -> None:
    older = pa("app", "b-strict", "STRICT", created="2026-12-01T00:00:00Z")
    newer = pa("app", "a-permissive", "PERMISSIVE", created="2026-12-01T00:00:05Z")
    assert mtls_in_force([MESH, newer, older], "app", {}).decided_by == "PeerAuthentication app/b-strict"
    same_second = pa("app", "a-permissive", "PERMISSIVE", created="2026-12-01T00:00:00Z")
    assert mtls_in_force([MESH, older, same_second], "app", {}).mode == "PERMISSIVE"  # then by name
    permissive_mesh = pa("istio-system", "zz", "PERMISSIVE", created="2026-12-02T00:00:00Z")
    assert mtls_in_force([MESH, permissive_mesh], "app", {}).mode == "STRICT"  # the newer mesh policy is ignored


def test_selector_policies_in_the_root_namespace_are_ignored_and_ports_come_from_the_workload_level() -> None:
    root_selector = pa("istio-system", "web", "DISABLE", selector={"app": "web"})
    assert mtls_in_force([MESH, root_selector], "app", {"app": "web"}).mode == "STRICT"
    workload = pa("app", "web", "UNSET", selector={"app": "web"}, ports={8080: "DISABLE", 9090: "UNSET"})
    found = mtls_in_force([MESH, workload], "app", {"app": "web"})
    assert found.port_modes == {8080: "DISABLE", 9090: "STRICT"} and found.plaintext_ports() == [8080]


@pytest.mark.parametrize(("rule", "matches"), [
    ({}, "no from"),
    ({"from": [{"source": {}}]}, "plaintext included"),
    ({"from": [{"source": {"principals": ["*"]}}]}, "any caller with a mesh identity"),
    ({"from": [{"source": {"namespaces": ["*"]}}]}, "any caller with a mesh identity"),
    ({"from": [{"source": {"namespaces": ["app"]}}]}, ""),
    ({"from": [{"source": {"principals": ["cluster.local/ns/app/sa/web"]}}], "to": [{}]}, ""),
])
def test_allow_rules_that_match_every_caller(rule: dict[str, Any], matches: str) -> None:
    found = rules_matching_everyone({"spec": {"action": "ALLOW", "rules": [rule]}})
    assert (matches in found[0][1]) if matches else found == []


def test_deny_policies_and_policies_without_rules_open_nothing() -> None:
    assert rules_matching_everyone({"spec": {"action": "DENY", "rules": [{}]}}) == []
    assert rules_matching_everyone({"spec": {}}) == []  # allow-nothing


def test_destination_rules_that_turn_tls_off_and_the_namespaces_they_reach() -> None:
    rule = {"spec": {"trafficPolicy": {"tls": {"mode": "DISABLE"},
                                       "portLevelSettings": [{"port": {"number": 8080}, "tls": {"mode": "DISABLE"}}]},
                     "subsets": [{"name": "v1", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}]}}
    assert tls_disabled(rule) == ["trafficPolicy", "trafficPolicy port 8080"]
    assert host_namespaces("web.app.svc.cluster.local", "x") == "app"
    assert host_namespaces("web", "x") == "x" and host_namespaces("web.app", "x") is None  # taken as written
    assert host_namespaces("*", "x") == "*" and host_namespaces("*.app.svc.cluster.local", "x") == "app"
    assert host_namespaces("example.com", "x") is None


OFF = {"tls": {"mode": "DISABLE"}}
POOL = {"connectionPool": {"http": {"maxRequestsPerConnection": 1}}}
WEB = "web.app.svc.cluster.local"


def dr(namespace: str, name: str, host: str, *, created: str = "2026-12-01T00:00:00Z", policy: Any = None,
       export_to: list[str] | None = None, selector: dict[str, str] | None = None,
       subsets: list[dict[str, Any]] | None = None) -> DestRule:
    spec: dict[str, Any] = {"host": host}
    if policy is not None:
        spec["trafficPolicy"] = policy
    if export_to is not None:
        spec["exportTo"] = export_to
    if selector is not None:
        spec["workloadSelector"] = {"matchLabels": selector}
    if subsets is not None:
        spec["subsets"] = subsets
    return DestRule.of({"metadata": {"namespace": namespace, "name": name, "creationTimestamp": created},
                        "spec": spec})


def off_in_force(rules: list[DestRule], rule: DestRule, client: str, *, hostname: str = WEB,
                 service: str = "app", labels: dict[str, str] | None = None) -> list[str]:
    in_force = destination_rule_in_force(rules, client_namespace=client, hostname=hostname,
                                         service_namespace=service, client_labels=labels)
    return tls_disabled_in_force(rule, in_force)


def test_for_one_host_the_oldest_rules_traffic_policy_wins_and_a_newer_one_adds_only_subsets() -> None:
    """mergeDestinationRule: first-created wins the top-level trafficPolicy; creation time then name orders."""
    pool = dr("app", "fresh-connections", WEB, created="2026-12-01T00:00:00Z", policy=POOL)
    off = dr("app", "tls-off", "web", created="2026-12-01T00:00:05Z", policy=OFF,
             subsets=[{"name": "v1", "trafficPolicy": OFF}])
    assert off.host == WEB  # a short name is relative to the rule's namespace
    assert off_in_force([pool, off], off, "app") == ["subset v1"]  # its new subset is merged in, its policy is not
    assert off_in_force([off], off, "app") == ["trafficPolicy", "subset v1"]
    same_second = dr("app", "a-tls-off", WEB, created="2026-12-01T00:00:00Z", policy=OFF)
    assert off_in_force([pool, same_second], same_second, "app") == ["trafficPolicy"]  # "a-..." sorts first
    # A rule without a top-level policy leaves the next one's in force.
    bare = dr("app", "subsets-only", WEB, created="2026-11-30T00:00:00Z", subsets=[{"name": "v2"}])
    assert off_in_force([bare, off], off, "app") == ["trafficPolicy", "subset v1"]


def test_the_clients_namespace_wins_then_the_services_then_the_root() -> None:
    """push_context.go destinationRule: the proxy's own namespace, the service's exported rules, the root's."""
    in_client = dr("shop", "tls-off", WEB, created="2026-12-01T00:00:09Z", policy=OFF)
    in_service = dr("app", "pool", WEB, policy=POOL)
    assert off_in_force([in_service, in_client], in_client, "shop") == ["trafficPolicy"]
    assert off_in_force([in_service, in_client], in_client, "app") == []  # not local to app, not exported by it
    root = dr("istio-system", "mesh-off", "*.svc.cluster.local", policy=OFF)
    assert off_in_force([root], root, "shop") == ["trafficPolicy"]
    assert off_in_force([root, in_service], root, "shop") == []  # the service's namespace comes first
    private = dr("app", "private-off", WEB, policy=OFF, export_to=["."])
    assert off_in_force([private], private, "app") == ["trafficPolicy"]
    assert off_in_force([private], private, "shop") == []  # exportTo "." keeps it home


def test_the_most_specific_host_wins_and_selectors_pick_their_workloads() -> None:
    wildcard = dr("app", "all-off", "*.app.svc.cluster.local", created="2026-11-01T00:00:00Z", policy=OFF)
    exact = dr("app", "web-pool", WEB, created="2026-12-01T00:00:00Z", policy=POOL)
    assert off_in_force([wildcard, exact], wildcard, "app") == []  # web has its own rule
    assert off_in_force([wildcard, exact], wildcard, "app", hostname="db.app.svc.cluster.local") == ["trafficPolicy"]
    selected = dr("shop", "for-legacy", WEB, policy=OFF, selector={"app": "legacy"})
    assert off_in_force([selected], selected, "shop", labels={"app": "legacy"}) == ["trafficPolicy"]
    assert off_in_force([selected], selected, "shop", labels={"app": "web"}) == []


def test_ports_excluded_from_capture_are_read_from_what_the_injector_wrote() -> None:
    pod = json.loads((FIXTURES / "pod-server-injected.json").read_text())
    assert bypassed_inbound_ports(pod) == (True, [])
    excluded = copy.deepcopy(pod)
    init = next(c for c in excluded["spec"]["initContainers"] if c["name"] == "istio-init")
    init["args"][init["args"].index("-d") + 1] = "15090,15021,15020,8080"
    assert bypassed_inbound_ports(excluded) == (True, ["8080"])
    naked = {"spec": {"containers": [{"name": "app"}]}}
    assert bypassed_inbound_ports(naked) == (False, [])
