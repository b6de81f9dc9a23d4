package main

import "testing"

const alice = "cluster.local/ns/a/sa/alice"
const bob = "cluster.local/ns/b/sa/bob"

func TestNoAllowPolicyAllowsEveryone(t *testing.T) {
	c := &MeshConfig{}
	if !c.allowed(alice) || !c.allowed("") {
		t.Fatal("without policies everything is allowed")
	}
}

func TestDenyBeforeAllow(t *testing.T) {
	c := &MeshConfig{
		Allow: []Rule{{Sources: []Source{{Principals: []string{"*"}}}}},
		Deny:  []Rule{{Sources: []Source{{Principals: []string{bob}}}}},
	}
	if !c.allowed(alice) {
		t.Fatal("alice matches the ALLOW rule")
	}
	if c.allowed(bob) {
		t.Fatal("bob is denied even though ALLOW * matches him")
	}
	if c.allowed("") {
		t.Fatal("plaintext has no principal and cannot match principals: [*]")
	}
}

func TestAnAllowPolicyMustMatch(t *testing.T) {
	c := &MeshConfig{Allow: []Rule{{Sources: []Source{{Namespaces: []string{"a"}}}}}}
	if !c.allowed(alice) || c.allowed(bob) {
		t.Fatal("only namespace a is allowed")
	}
	empty := &MeshConfig{Allow: []Rule{}}
	if empty.allowed(alice) {
		t.Fatal("an ALLOW policy without rules allows nothing")
	}
}

func TestBrokenRulesFailClosed(t *testing.T) {
	allow := &MeshConfig{Allow: []Rule{{MatchesNone: true}}}
	if allow.allowed(alice) {
		t.Fatal("an unsupported ALLOW rule never matches")
	}
	deny := &MeshConfig{Deny: []Rule{{MatchesAll: true}}}
	if deny.allowed(alice) {
		t.Fatal("an unsupported DENY rule matches everything")
	}
}

func TestGlobsAndNegations(t *testing.T) {
	s := Source{Principals: []string{"cluster.local/ns/a/*"}, NotPrincipals: []string{"*/sa/mallory"}}
	if !s.matches(alice) || s.matches("cluster.local/ns/a/sa/mallory") || s.matches(bob) {
		t.Fatal("prefix glob with a suffix exclusion")
	}
}

func TestPortLevelModeOverrides(t *testing.T) {
	c := &MeshConfig{Mode: "STRICT", PortModes: map[string]string{"8081": "PERMISSIVE"}}
	if c.modeFor("8080") != "STRICT" || c.modeFor("8081") != "PERMISSIVE" {
		t.Fatal("port-level mode wins for its port only")
	}
}
