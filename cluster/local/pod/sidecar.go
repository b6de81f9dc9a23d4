package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

type sidecar struct {
	certs  *certManager
	config *configWatcher
	logf   func(string, ...any)
}

func runSidecar(args []string) error {
	fs := flag.NewFlagSet("sidecar", flag.ExitOnError)
	caURL := fs.String("ca-url", "", "mesh CA base URL")
	caBundle := fs.String("ca-bundle", "", "PEM bundle that signs the mesh CA's serving certificate")
	tokenFile := fs.String("token-file", "", "projected service-account token (audience istio-ca)")
	spiffe := fs.String("spiffe", "", "this workload's SPIFFE ID")
	meshConfig := fs.String("mesh-config", "", "mesh.json pushed by istiod")
	statusFile := fs.String("status-file", "", "where to write certificate status")
	renew := fs.Float64("renew-fraction", 0.5, "renew at this fraction of the certificate lifetime")
	inbound := fs.String("inbound", "0.0.0.0:15006", "inbound capture address")
	outbound := fs.String("outbound", "127.0.0.1:15001", "outbound capture address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := log.New(os.Stderr, "sidecar ", log.LstdFlags|log.Lmicroseconds)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(*caBundle)
	if err != nil {
		return err
	}
	pool.AppendCertsFromPEM(pem)
	caClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	s := &sidecar{
		certs: &certManager{caURL: *caURL, caClient: caClient, tokenFile: *tokenFile, spiffe: *spiffe,
			renewFraction: *renew, statusFile: *statusFile, logf: logger.Printf},
		config: &configWatcher{path: *meshConfig},
		logf:   logger.Printf,
	}
	s.certs.generation = s.config.generation
	if err := s.config.load(); err != nil {
		logger.Printf("no mesh config yet: %v", err)
	}
	go s.config.loop(logger.Printf, s.certs.refreshStatus)
	if err := s.certs.fetch(); err != nil {
		logger.Printf("first certificate: %v", err)
		s.certs.writeStatus(err.Error())
	}
	s.certs.renewNow = make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			select {
			case s.certs.renewNow <- struct{}{}:
			default:
			}
		}
	}()
	go s.certs.loop()
	in, err := net.Listen("tcp", *inbound)
	if err != nil {
		return err
	}
	out, err := net.Listen("tcp", *outbound)
	if err != nil {
		return err
	}
	go s.serveOutbound(out)
	return s.serveInbound(in)
}

// -- outbound: the app's connections, redirected to 15001 -------------------

func (s *sidecar) serveOutbound(l net.Listener) {
	for {
		conn, err := l.Accept()
		if err != nil {
			s.logf("outbound accept: %v", err)
			continue
		}
		go s.handleOutbound(conn)
	}
}

func (s *sidecar) handleOutbound(conn net.Conn) {
	defer conn.Close()
	dst, err := originalDst(conn)
	if err != nil {
		s.logf("outbound: no original destination: %v", err)
		return
	}
	host, _, _ := net.SplitHostPort(dst)
	peer, meshed := s.config.get().Peers[host]
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	var upstream net.Conn
	if meshed && peer.Meshed {
		upstream, err = tls.DialWithDialer(dialer, "tcp", dst, &tls.Config{
			GetClientCertificate: s.certs.getClientCertificate,
			InsecureSkipVerify:   true, // the chain and SPIFFE ID are checked in VerifyConnection
			VerifyConnection:     s.certs.verifyPeer(peer.Spiffe),
			ServerName:           "outbound",
			MinVersion:           tls.VersionTLS12,
		})
	} else {
		upstream, err = dialer.Dial("tcp", dst) // not in the mesh: pass through
	}
	if err != nil {
		s.logf("outbound to %s: %v", dst, err)
		reset(conn)
		return
	}
	defer upstream.Close()
	pipe(conn, upstream)
}

// reset closes with RST so that the app sees a refused call, never a silent hang.
func reset(conn net.Conn) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	copyHalf := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	go copyHalf(a, b)
	go copyHalf(b, a)
	wg.Wait()
}

// -- inbound: peers' connections, redirected to 15006 -----------------------

type inboundConn struct {
	net.Conn
	reader    *bufio.Reader
	port      string
	principal string
	peerHash  string
}

func (c *inboundConn) Read(p []byte) (int, error) { return c.reader.Read(p) }

type connKey struct{}

// inboundListener turns each accepted connection into mTLS or plaintext
// according to the pod's current PeerAuthentication mode for the port.
type inboundListener struct {
	net.Listener
	s     *sidecar
	conns chan net.Conn
}

func (s *sidecar) serveInbound(l net.Listener) error {
	il := &inboundListener{Listener: l, s: s, conns: make(chan net.Conn)}
	go il.acceptLoop()
	server := &http.Server{
		Handler:           http.HandlerFunc(s.handleInbound),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx contextT, c net.Conn) contextT {
			return withConn(ctx, c)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return server.Serve(il)
}

func (l *inboundListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}

func (l *inboundListener) acceptLoop() {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			continue
		}
		go func() {
			if wrapped := l.s.admit(conn); wrapped != nil {
				l.conns <- wrapped
			}
		}()
	}
}

func (s *sidecar) admit(conn net.Conn) net.Conn {
	dst, err := originalDst(conn)
	if err != nil {
		s.logf("inbound: no original destination: %v", err)
		reset(conn)
		return nil
	}
	_, port, _ := net.SplitHostPort(dst)
	mode := s.config.get().modeFor(port)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	reader := bufio.NewReader(conn)
	first, err := reader.Peek(1)
	if err != nil {
		_ = conn.Close()
		return nil
	}
	isTLS := first[0] == 0x16
	switch {
	case mode == "STRICT" && !isTLS:
		s.logf("inbound: refused plaintext on port %s (STRICT)", port)
		reset(conn)
		return nil
	case mode == "DISABLE" || !isTLS:
		_ = conn.SetReadDeadline(time.Time{})
		return &inboundConn{Conn: conn, reader: reader, port: port}
	}
	tlsConn := tls.Server(&peekedConn{Conn: conn, reader: reader}, &tls.Config{
		GetCertificate:   s.certs.getCertificate,
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: s.certs.verifyPeer(""),
		MinVersion:       tls.VersionTLS12,
	})
	if err := tlsConn.Handshake(); err != nil {
		s.logf("inbound: mTLS handshake on port %s: %v", port, err)
		reset(conn)
		return nil
	}
	_ = conn.SetReadDeadline(time.Time{})
	state := tlsConn.ConnectionState()
	peer := state.PeerCertificates[0]
	hash := sha256.Sum256(peer.Raw)
	return &inboundConn{Conn: tlsConn, reader: bufio.NewReader(tlsConn), port: port,
		principal: strings.TrimPrefix(spiffeOf(peer), "spiffe://"), peerHash: hex.EncodeToString(hash[:])}
}

type peekedConn struct {
	net.Conn
	reader *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.reader.Read(p) }

func (s *sidecar) handleInbound(w http.ResponseWriter, r *http.Request) {
	conn, _ := connFrom(r.Context()).(*inboundConn)
	if conn == nil {
		http.Error(w, "no connection", http.StatusInternalServerError)
		return
	}
	cfg := s.config.get()
	if !cfg.allowed(conn.principal) {
		who := conn.principal
		if who == "" {
			who = "an unauthenticated caller"
		}
		http.Error(w, fmt.Sprintf("RBAC: access denied for %s", who), http.StatusForbidden)
		return
	}
	r.Header.Del("X-Forwarded-Client-Cert") // never trust one a caller sent
	if conn.principal != "" {
		r.Header.Set("X-Forwarded-Client-Cert",
			fmt.Sprintf("By=%s;Hash=%s;URI=spiffe://%s", s.certs.spiffe, conn.peerHash, conn.principal))
	}
	target := &url.URL{Scheme: "http", Host: "127.0.0.1:" + conn.port}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	proxy.Transport = localTransport
	proxy.ServeHTTP(w, r)
}

var localTransport = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
