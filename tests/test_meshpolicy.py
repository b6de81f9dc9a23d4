"""The subset of Istio policy that the local istiod compiles, against Istio's documented semantics."""

from __future__ import annotations

from typing import Any

from cluster.local.meshpolicy import PodView, compile_pod, peers

POD = PodView("shop", "api-0", {"app": "api"}, "10.0.0.5", "api", meshed=True)


def pa(namespace: str, name: str, mode: str | None, *, selector: dict[str, str] | None = None,
       created: str = "2026-01-01T00:00:00Z", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = dict(extra)
    if mode:
        spec["mtls"] = {"mode": mode}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": created}, "spec": spec}


def ap(namespace: str, name: str, action: str = "ALLOW", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": {"action": action, **spec}}


def mode_of(*policies: dict[str, Any]) -> str:
    return compile_pod(POD, "cluster.local", policies, []).mode


def test_nothing_means_permissive_as_in_istio() -> None:
    assert mode_of() == "PERMISSIVE"


def test_precedence_is_workload_then_namespace_then_mesh() -> None:
    mesh = pa("istio-system", "default", "STRICT")
    namespace = pa("shop", "default", "PERMISSIVE")
    workload = pa("shop", "api", "DISABLE", selector={"app": "api"})
    other = pa("shop", "web", "STRICT", selector={"app": "web"})
    assert mode_of(mesh) == "STRICT"
    assert mode_of(mesh, namespace) == "PERMISSIVE"
    assert mode_of(mesh, namespace, workload, other) == "DISABLE"
    assert mode_of(mesh, pa("other", "default", "DISABLE")) == "STRICT"  # other namespaces do not apply


def test_unset_inherits_and_the_oldest_policy_wins() -> None:
    mesh = pa("istio-system", "default", "STRICT")
    assert mode_of(mesh, pa("shop", "default", None)) == "STRICT"
    newer = pa("shop", "b", "PERMISSIVE", created="2026-02-01T00:00:00Z")
    older = pa("shop", "a", "DISABLE", created="2026-01-01T00:00:00Z")
    assert mode_of(newer, older) == "DISABLE"


def test_port_level_modes_apply_to_their_port_only() -> None:
    workload = pa("shop", "api", "STRICT", selector={"app": "api"}, portLevelMtls={"8081": {"mode": "PERMISSIVE"}})
    config = compile_pod(POD, "cluster.local", [workload], [])
    assert (config.mode, config.port_modes) == ("STRICT", {"8081": "PERMISSIVE"})


def test_an_unsupported_peer_authentication_field_fails_closed_and_is_reported() -> None:
    config = compile_pod(POD, "cluster.local", [pa("shop", "default", "PERMISSIVE", jwtRules=[{}])], [])
    assert config.mode == "STRICT"
    assert config.broken == ["PeerAuthentication shop/default: unsupported field spec.jwtRules"]


def test_authorization_deny_and_allow_lists() -> None:
    allow = ap("shop", "allow", rules=[{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/web"]}}]}])
    deny = ap("istio-system", "deny", "DENY", rules=[{"from": [{"source": {"namespaces": ["evil"]}}]}])
    elsewhere = ap("other", "allow", rules=[{}])
    config = compile_pod(POD, "cluster.local", [], [allow, deny, elsewhere])
    assert config.allow == [{"sources": [{"principals": ["cluster.local/ns/shop/sa/web"], "not_principals": [],
                                          "namespaces": [], "not_namespaces": []}],
                             "matches_all": False, "matches_none": False}]
    assert config.deny[0]["sources"][0]["namespaces"] == ["evil"]


def test_no_allow_policy_is_none_and_an_empty_one_denies_all() -> None:
    assert compile_pod(POD, "cluster.local", [], []).allow is None
    assert compile_pod(POD, "cluster.local", [], [ap("shop", "deny-all")]).allow == []


def test_a_selector_that_does_not_match_leaves_the_pod_alone() -> None:
    policy = ap("shop", "web-only", selector={"matchLabels": {"app": "web"}}, rules=[{}])
    assert compile_pod(POD, "cluster.local", [], [policy]).allow is None


def test_unsupported_authorization_fields_fail_closed() -> None:
    to_rule = ap("shop", "paths", rules=[{"to": [{"operation": {"paths": ["/admin"]}}]}])
    allow = compile_pod(POD, "cluster.local", [], [to_rule])
    assert allow.allow == [{"sources": [], "matches_all": False, "matches_none": True}]
    assert "unsupported field spec.rules[0].to" in allow.broken[0]
    deny_rule = ap("shop", "ips", "DENY", rules=[{"from": [{"source": {"ipBlocks": ["1.2.3.4"]}}]}])
    deny = compile_pod(POD, "cluster.local", [], [deny_rule])
    assert deny.deny == [{"sources": [], "matches_all": True, "matches_none": False}]
    custom = compile_pod(POD, "cluster.local", [], [ap("shop", "ext", "CUSTOM")])
    assert custom.deny[0]["matches_all"] and "unsupported action CUSTOM" in custom.broken[0]


def test_peers_map_pod_ips_to_spiffe_ids() -> None:
    naked = PodView("legacy", "old", {}, "10.0.0.9", "default", meshed=False)
    pending = PodView("shop", "new", {}, "", "api", meshed=True)
    assert peers([POD, naked, pending], "cluster.local") == {
        "10.0.0.5": {"spiffe": "spiffe://cluster.local/ns/shop/sa/api", "meshed": True},
        "10.0.0.9": {"spiffe": "spiffe://cluster.local/ns/legacy/sa/default", "meshed": False},
    }
