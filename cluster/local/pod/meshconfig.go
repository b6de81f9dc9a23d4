package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// MeshConfig is what the local istiod computes for one pod from the
// PeerAuthentication and AuthorizationPolicy objects and the pods it
// watches, the way istiod pushes xDS to a proxy.
type MeshConfig struct {
	Generation  int64             `json:"generation"`
	TrustDomain string            `json:"trust_domain"`
	Self        string            `json:"self"`
	Mode        string            `json:"mode"`
	PortModes   map[string]string `json:"port_modes"`
	Allow       []Rule            `json:"allow"` // nil: no ALLOW policy applies
	Deny        []Rule            `json:"deny"`
	Peers       map[string]Peer   `json:"peers"` // pod IP -> identity
	Broken      []string          `json:"broken"`
}

type Peer struct {
	Spiffe string `json:"spiffe"`
	Meshed bool   `json:"meshed"`
}

// Rule matches when any of its sources matches; no sources match everything.
type Rule struct {
	Sources     []Source `json:"sources"`
	MatchesAll  bool     `json:"matches_all"`
	MatchesNone bool     `json:"matches_none"`
}

type Source struct {
	Principals    []string `json:"principals"`
	NotPrincipals []string `json:"not_principals"`
	Namespaces    []string `json:"namespaces"`
	NotNamespaces []string `json:"not_namespaces"`
}

func (c *MeshConfig) modeFor(port string) string {
	if m, ok := c.PortModes[port]; ok && m != "" {
		return m
	}
	if c.Mode == "" {
		return "PERMISSIVE"
	}
	return c.Mode
}

// allowed applies DENY before ALLOW; once any ALLOW applies, a request must match one.
func (c *MeshConfig) allowed(principal string) bool {
	for _, r := range c.Deny {
		if r.matches(principal) {
			return false
		}
	}
	if c.Allow == nil {
		return true
	}
	for _, r := range c.Allow {
		if r.matches(principal) {
			return true
		}
	}
	return false
}

func (r Rule) matches(principal string) bool {
	if r.MatchesNone {
		return false
	}
	if r.MatchesAll || len(r.Sources) == 0 {
		return true
	}
	for _, s := range r.Sources {
		if s.matches(principal) {
			return true
		}
	}
	return false
}

func (s Source) matches(principal string) bool {
	ns := namespaceOf(principal)
	if len(s.Principals) > 0 && !anyGlob(s.Principals, principal) {
		return false
	}
	if len(s.NotPrincipals) > 0 && anyGlob(s.NotPrincipals, principal) {
		return false
	}
	if len(s.Namespaces) > 0 && (ns == "" || !anyGlob(s.Namespaces, ns)) {
		return false
	}
	if len(s.NotNamespaces) > 0 && ns != "" && anyGlob(s.NotNamespaces, ns) {
		return false
	}
	return true
}

// namespaceOf reads "<td>/ns/<ns>/sa/<sa>"; plaintext callers have no principal.
func namespaceOf(principal string) string {
	parts := strings.Split(principal, "/")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "ns" {
			return parts[i+1]
		}
	}
	return ""
}

// anyGlob supports Istio's forms: exact, "*", "prefix*" and "*suffix".
func anyGlob(patterns []string, value string) bool {
	if value == "" {
		return false
	}
	for _, p := range patterns {
		switch {
		case p == "*":
			return true
		case strings.HasSuffix(p, "*") && strings.HasPrefix(value, strings.TrimSuffix(p, "*")):
			return true
		case strings.HasPrefix(p, "*") && strings.HasSuffix(value, strings.TrimPrefix(p, "*")):
			return true
		case p == value:
			return true
		}
	}
	return false
}

// configWatcher reloads the pod's mesh.json when istiod rewrites it. It
// reads the (small) file on every poll: two rewrites within one mtime tick
// would otherwise leave the proxy on the older generation.
type configWatcher struct {
	path    string
	current atomic.Pointer[MeshConfig]
	raw     []byte
}

func (w *configWatcher) load() error {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return err
	}
	if bytes.Equal(data, w.raw) && w.current.Load() != nil {
		return nil
	}
	var cfg MeshConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return err
	}
	w.current.Store(&cfg)
	w.raw = data
	return nil
}

func (w *configWatcher) get() *MeshConfig {
	if c := w.current.Load(); c != nil {
		return c
	}
	// Nothing pushed yet: fail closed.
	return &MeshConfig{Mode: "STRICT", Allow: []Rule{}}
}

func (w *configWatcher) generation() int64 {
	if c := w.current.Load(); c != nil {
		return c.Generation
	}
	return 0
}

// loop reloads every 100 ms and calls changed after each new generation.
func (w *configWatcher) loop(logf func(string, ...any), changed func()) {
	seen := w.generation()
	for {
		if err := w.load(); err != nil {
			logf("mesh config: %v", err)
		}
		if g := w.generation(); g != seen {
			seen = g
			for _, problem := range w.get().Broken {
				logf("refused policy: %s", problem)
			}
			changed()
		}
		time.Sleep(100 * time.Millisecond)
	}
}
