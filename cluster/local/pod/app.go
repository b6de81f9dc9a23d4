package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

type app struct {
	namespace, serviceAccount, pod string
	vault                          *vaultAgent
	logf                           func(string, ...any)
}

func runApp(args []string) error {
	fs := flag.NewFlagSet("app", flag.ExitOnError)
	listen := fs.String("listen", "0.0.0.0:8080", "echo server address")
	agentSocket := fs.String("agent-socket", "", "unix socket for the platform's calls and Vault reads")
	a := &app{}
	fs.StringVar(&a.namespace, "namespace", "", "")
	fs.StringVar(&a.serviceAccount, "service-account", "", "")
	fs.StringVar(&a.pod, "pod", "", "")
	v := &vaultAgent{}
	fs.StringVar(&v.addr, "vault-addr", "", "Vault address as pods reach it")
	fs.StringVar(&v.caFile, "vault-ca", "", "")
	fs.StringVar(&v.authPath, "vault-auth-path", "kubernetes", "")
	fs.StringVar(&v.role, "vault-role", "", "")
	fs.StringVar(&v.tokenFile, "vault-token-file", "", "projected service-account token (audience vault)")
	fs.StringVar(&v.secretURL, "vault-secret", "", "KV v2 data path, e.g. secret/data/ns/app")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := log.New(os.Stderr, "app ", log.LstdFlags|log.Lmicroseconds)
	a.logf = logger.Printf
	if v.addr != "" {
		v.logf = logger.Printf
		if err := v.init(); err != nil {
			return err
		}
		a.vault = v
		go v.loop()
	}
	echo := &http.Server{Addr: *listen, Handler: http.HandlerFunc(a.echo), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := echo.ListenAndServe(); err != nil {
			logger.Fatalf("echo server: %v", err)
		}
	}()
	_ = os.Remove(*agentSocket)
	control, err := net.Listen("unix", *agentSocket)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/call", a.call)
	mux.HandleFunc("/session", a.session)
	mux.HandleFunc("/vault", a.readVault)
	// Every answer is JSON: `tgpod agent` prints it for platforms that parse it after `kubectl exec`.
	mux.HandleFunc("/vault/pause", func(w http.ResponseWriter, _ *http.Request) {
		a.vault.setPaused(true)
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	mux.HandleFunc("/vault/resume", func(w http.ResponseWriter, _ *http.Request) {
		a.vault.setPaused(false)
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	mux.HandleFunc("/vault/relogin", a.relogin)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	return (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(control)
}

// echo answers with the request headers (XFCC included) and its own identity.
func (a *app) echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"namespace": a.namespace, "service_account": a.serviceAccount, "pod": a.pod,
		"headers": r.Header, "path": r.URL.RequestURI(),
	})
}

type callRequest struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Timeout float64           `json:"timeout"`
}

type callResult struct {
	Status  int             `json:"status"`
	Error   string          `json:"error"`
	Detail  string          `json:"detail"`
	Elapsed float64         `json:"elapsed"`
	Body    json.RawMessage `json:"body,omitempty"`
}

// call makes one request from inside the pod, on a fresh connection, so
// that every call crosses the sidecars (and their current certificates).
func (a *app) call(w http.ResponseWriter, r *http.Request) {
	var req callRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	timeout := time.Duration(req.Timeout * float64(time.Second))
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	out, _ := http.NewRequest(http.MethodGet, req.URL, nil)
	for k, v := range req.Headers {
		out.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := client.Do(out)
	result := callResult{}
	if err != nil {
		result.Error, result.Detail = classify(err), err.Error()
	} else {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		result.Status = resp.StatusCode
		if json.Valid(body) {
			result.Body = body
		} else {
			result.Detail = strings.TrimSpace(string(body))
		}
		switch {
		case resp.StatusCode == http.StatusForbidden:
			result.Error = "http_403"
		case resp.StatusCode >= 500:
			result.Error = "http_5xx"
		}
	}
	result.Elapsed = time.Since(start).Seconds()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(result)
}

type sessionRequest struct {
	URL      string  `json:"url"`
	Count    int     `json:"count"`
	Interval float64 `json:"interval"`
}

// session makes Count requests over one kept-alive connection, Interval
// seconds apart, and reports each status and whether the connection was
// reused: it proves that rotation does not drop established connections.
func (a *app) session(w http.ResponseWriter, r *http.Request) {
	var req sessionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, IdleConnTimeout: time.Minute}
	client := &http.Client{Timeout: 5 * time.Second, Transport: transport}
	type step struct {
		Status int    `json:"status"`
		Error  string `json:"error"`
		Reused bool   `json:"reused"`
	}
	steps := make([]step, 0, req.Count)
	for i := 0; i < req.Count; i++ {
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
		out, _ := http.NewRequestWithContext(httptrace.WithClientTrace(r.Context(), trace), http.MethodGet, req.URL, nil)
		resp, err := client.Do(out)
		s := step{}
		if err != nil {
			s.Error = classify(err) + ": " + err.Error()
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			s.Status, s.Reused = resp.StatusCode, reused
		}
		steps = append(steps, s)
		time.Sleep(time.Duration(req.Interval * float64(time.Second)))
	}
	transport.CloseIdleConnections()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"steps": steps})
}

func classify(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		strings.Contains(err.Error(), "connection reset"), strings.Contains(err.Error(), "EOF"):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "tls:"), strings.Contains(err.Error(), "x509"):
		return "tls_handshake"
	}
	return "other"
}

// -- the Vault agent: log in, renew, and log in again when renewal is refused

type vaultAgent struct {
	addr, caFile, authPath, role, tokenFile, secretURL string
	client                                             *http.Client
	mu                                                 sync.Mutex
	token                                              string
	leaseSeconds                                       float64
	obtained                                           time.Time
	lastError                                          string
	logins, renewals                                   int
	accessor                                           string
	paused                                             bool
	logf                                               func(string, ...any)
}

func (v *vaultAgent) init() error {
	pool, err := vaultRoots(v.caFile)
	if err != nil {
		return err
	}
	v.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	return nil
}

// vaultRoots is the pool the agent trusts Vault's certificate with. No --vault-ca, or an
// empty file (the ConfigMap of a Vault that listens in plaintext or has a public
// certificate), means the system pool (nil RootCAs). A file that cannot be read, or that
// holds no certificate, is an error at start that names it: a pool with nothing in it
// would only fail later, on every login, as an opaque x509 error.
func vaultRoots(caFile string) (*x509.CertPool, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--vault-ca %s cannot be read (%w): mount Vault's CA there, or leave --vault-ca out to trust the system roots", caFile, err)
	}
	if len(bytes.TrimSpace(pem)) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--vault-ca %s holds no PEM certificate: put Vault's CA certificate there, or leave --vault-ca out to trust the system roots", caFile)
	}
	return pool, nil
}

type vaultAuth struct {
	Auth *struct {
		ClientToken   string  `json:"client_token"`
		Accessor      string  `json:"accessor"`
		LeaseDuration float64 `json:"lease_duration"`
	} `json:"auth"`
	Errors []string `json:"errors"`
}

func (v *vaultAgent) do(method, path, token string, body any) (int, []byte, error) {
	var reader io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		reader = bytes.NewReader(data)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, v.addr+"/v1/"+path, reader)
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// authCall posts to a Vault auth endpoint and returns the new lease, or why it was refused.
func (v *vaultAgent) authCall(path, token string, body any, what string) (*vaultAuth, error) {
	status, data, err := v.do(http.MethodPost, path, token, body)
	if err != nil {
		return nil, err
	}
	var answer vaultAuth
	_ = json.Unmarshal(data, &answer)
	if status != http.StatusOK || answer.Auth == nil {
		return nil, fmt.Errorf("%s refused (%d): %s", what, status, strings.Join(answer.Errors, "; "))
	}
	return &answer, nil
}

func (v *vaultAgent) login() error {
	jwt, err := os.ReadFile(v.tokenFile)
	if err != nil {
		return err
	}
	answer, err := v.authCall("auth/"+v.authPath+"/login", "",
		map[string]string{"role": v.role, "jwt": strings.TrimSpace(string(jwt))}, "login")
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.token, v.leaseSeconds, v.obtained = answer.Auth.ClientToken, answer.Auth.LeaseDuration, time.Now()
	v.accessor = answer.Auth.Accessor
	v.logins++
	v.mu.Unlock()
	return nil
}

func (v *vaultAgent) renew() error {
	v.mu.Lock()
	token := v.token
	v.mu.Unlock()
	answer, err := v.authCall("auth/token/renew-self", token, map[string]string{}, "renewal")
	if err != nil {
		return err
	}
	v.mu.Lock()
	// Renewal past the max TTL returns a shorter lease: once it stops growing,
	// the next round logs in again instead.
	v.leaseSeconds, v.obtained = answer.Auth.LeaseDuration, time.Now()
	v.renewals++
	v.mu.Unlock()
	return nil
}

// relogin drops the agent's token and logs in again now, so that a capture can
// watch a login (the JWT out, a token back) happen rather than wait for one.
func (a *app) relogin(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if a.vault == nil {
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "no vault agent"})
		return
	}
	err := a.vault.login()
	result := map[string]any{"ok": err == nil}
	if err != nil {
		result["error"] = err.Error()
	}
	_ = json.NewEncoder(w).Encode(result)
}

// setPaused stops (or resumes) renewals and logins: a stuck agent, whose
// token then simply runs out (the vault-token-expiry scenario).
func (v *vaultAgent) setPaused(paused bool) {
	v.mu.Lock()
	v.paused = paused
	v.mu.Unlock()
}

func (v *vaultAgent) loop() {
	for {
		v.mu.Lock()
		token, lease, obtained, paused := v.token, v.leaseSeconds, v.obtained, v.paused
		v.mu.Unlock()
		if paused {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var err error
		switch {
		case token == "":
			err = v.login()
		case time.Since(obtained).Seconds() >= lease/2:
			if err = v.renew(); err != nil || v.currentLease() < 2 {
				err = v.login()
			}
		default:
			time.Sleep(200 * time.Millisecond)
			continue
		}
		v.mu.Lock()
		if err != nil {
			v.lastError = err.Error()
			v.token = ""
		} else {
			v.lastError = ""
		}
		v.mu.Unlock()
		if err != nil {
			v.logf("vault agent: %v", err)
			time.Sleep(time.Second)
		}
	}
}

func (v *vaultAgent) currentLease() float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.leaseSeconds
}

// readVault reads the namespace's secret now, with the agent's current
// token, and reports only a digest of the value, never the value.
func (a *app) readVault(w http.ResponseWriter, _ *http.Request) {
	result := map[string]any{"ok": false}
	if a.vault == nil {
		result["error"] = "no vault agent"
	} else {
		v := a.vault
		v.mu.Lock()
		token, lastError, logins, renewals := v.token, v.lastError, v.logins, v.renewals
		expires := v.obtained.Add(time.Duration(v.leaseSeconds * float64(time.Second)))
		accessor, paused := v.accessor, v.paused
		v.mu.Unlock()
		result["logins"], result["renewals"], result["accessor"], result["paused"] = logins, renewals, accessor, paused
		if token != "" {
			result["expires_in"] = time.Until(expires).Seconds()
		}
		if token == "" {
			result["error"] = "not logged in: " + lastError
		} else {
			start := time.Now()
			status, data, err := v.do(http.MethodGet, v.secretURL, token, nil)
			result["elapsed"] = time.Since(start).Seconds()
			result["status"] = status
			switch {
			case err != nil:
				result["error"] = classify(err) + ": " + err.Error()
			case status != http.StatusOK:
				result["error"] = fmt.Sprintf("vault answered %d", status)
			default:
				sum := sha256.Sum256(data)
				result["ok"], result["digest"] = true, hex.EncodeToString(sum[:8])
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(result)
}
