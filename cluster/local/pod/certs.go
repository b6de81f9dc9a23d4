package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// identity is the sidecar's current workload certificate and trust bundle.
// Both are swapped atomically, so rotation never touches open connections.
type identity struct {
	cert   *tls.Certificate
	leaf   *x509.Certificate
	roots  *x509.CertPool
	issued time.Time
}

type certManager struct {
	caURL         string
	caClient      *http.Client
	tokenFile     string
	spiffe        string
	renewFraction float64
	statusFile    string
	generation    func() int64
	current       atomic.Pointer[identity]
	lastError     atomic.Pointer[string]
	renewNow      chan struct{}
	logf          func(string, ...any)
}

type signResponse struct {
	CertChain []string `json:"cert_chain"`
	Roots     []string `json:"roots"`
	Error     string   `json:"error"`
}

func (m *certManager) fetch() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	uri, err := url.Parse(m.spiffe)
	if err != nil {
		return err
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{uri}}, key)
	if err != nil {
		return err
	}
	token, err := os.ReadFile(m.tokenFile)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]string{
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
	})
	req, _ := http.NewRequest(http.MethodPost, m.caURL+"/v1/sign", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := m.caClient.Do(req)
	if err != nil {
		return fmt.Errorf("mesh CA unreachable: %w", err)
	}
	defer resp.Body.Close()
	var answer signResponse
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		return fmt.Errorf("mesh CA answered %d with no JSON", resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mesh CA refused (%d): %s", resp.StatusCode, answer.Error)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	chainPEM := strings.Join(answer.CertChain, "\n")
	pair, err := tls.X509KeyPair([]byte(chainPEM), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return fmt.Errorf("bad certificate from mesh CA: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return err
	}
	pair.Leaf = leaf
	roots := x509.NewCertPool()
	for _, root := range answer.Roots {
		roots.AppendCertsFromPEM([]byte(root))
	}
	m.current.Store(&identity{cert: &pair, leaf: leaf, roots: roots, issued: time.Now()})
	m.writeStatus("")
	return nil
}

// refreshStatus rewrites the status with the last recorded error.
func (m *certManager) refreshStatus() {
	last := ""
	if p := m.lastError.Load(); p != nil {
		last = *p
	}
	m.writeStatus(last)
}

func (m *certManager) writeStatus(lastError string) {
	m.lastError.Store(&lastError)
	status := map[string]any{"ready": false, "last_error": lastError, "time": time.Now().UTC().Format(time.RFC3339Nano)}
	if m.generation != nil {
		status["config_generation"] = m.generation()
	}
	if id := m.current.Load(); id != nil {
		status["ready"] = time.Now().Before(id.leaf.NotAfter)
		status["serial"] = id.leaf.SerialNumber.String()
		status["not_after"] = id.leaf.NotAfter.UTC().Format(time.RFC3339Nano)
		status["not_before"] = id.leaf.NotBefore.UTC().Format(time.RFC3339Nano)
		status["issuer"] = id.leaf.Issuer.CommonName
		status["obtained_at"] = id.issued.UTC().Format(time.RFC3339Nano)
		status["roots"] = len(id.roots.Subjects()) //lint:ignore SA1019 counting a pool we built
	}
	data, _ := json.Marshal(status)
	tmp := m.statusFile + ".new"
	if os.WriteFile(tmp, data, 0o644) == nil {
		_ = os.Rename(tmp, m.statusFile)
	}
}

// loop renews at renewFraction of the lifetime, retrying every second on
// failure. It never extends an expired certificate: when the CA (or Vault
// behind it) refuses, the certificate runs out and peers refuse us.
func (m *certManager) loop() {
	for {
		id := m.current.Load()
		var due time.Time
		if id != nil {
			life := id.leaf.NotAfter.Sub(id.issued)
			due = id.issued.Add(time.Duration(float64(life) * m.renewFraction))
		}
		if wait := time.Until(due); wait > 0 {
			select {
			case <-m.renewNow: // SIGHUP: renew now (cert-rotation scenarios)
			case <-time.After(min(wait, time.Second)):
				continue
			}
		}
		if err := m.fetch(); err != nil {
			m.logf("certificate renewal failed: %v", err)
			m.writeStatus(err.Error())
			time.Sleep(time.Second)
		}
	}
}

func (m *certManager) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if id := m.current.Load(); id != nil {
		return id.cert, nil
	}
	return nil, fmt.Errorf("no workload certificate yet")
}

func (m *certManager) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if id := m.current.Load(); id != nil {
		return id.cert, nil
	}
	return &tls.Certificate{}, nil
}

// verifyPeer checks the chain against the current trust bundle (hot-swapped)
// and, when expected is set, the peer's SPIFFE ID.
func (m *certManager) verifyPeer(expected string) func(tls.ConnectionState) error {
	return func(state tls.ConnectionState) error {
		id := m.current.Load()
		if id == nil {
			return fmt.Errorf("no trust bundle yet")
		}
		if len(state.PeerCertificates) == 0 {
			return fmt.Errorf("peer sent no certificate")
		}
		intermediates := x509.NewCertPool()
		for _, c := range state.PeerCertificates[1:] {
			intermediates.AddCert(c)
		}
		leaf := state.PeerCertificates[0]
		_, err := leaf.Verify(x509.VerifyOptions{
			Roots: id.roots, Intermediates: intermediates,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return fmt.Errorf("peer certificate does not chain to the trust bundle: %w", err)
		}
		got := spiffeOf(leaf)
		if expected != "" && got != expected {
			return fmt.Errorf("peer is %q, expected %q", got, expected)
		}
		return nil
	}
}

func spiffeOf(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}
