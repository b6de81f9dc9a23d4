package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNoVaultCAMeansTheSystemRoots(t *testing.T) {
	pool, err := vaultRoots("")
	if err != nil || pool != nil {
		t.Fatalf("want the system roots (nil pool, no error), got %v, %v", pool, err)
	}
	empty := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err = vaultRoots(empty)
	if err != nil || pool != nil {
		t.Fatalf("an empty CA file: want the system roots, got %v, %v", pool, err)
	}
}

func TestAMissingOrBadVaultCAIsOneClearErrorAtStart(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "absent.crt")
	if _, err := vaultRoots(missing); err == nil || !strings.Contains(err.Error(), missing) ||
		!strings.Contains(err.Error(), "leave --vault-ca out") {
		t.Fatalf("a missing file: want an error naming it and the fix, got %v", err)
	}
	junk := filepath.Join(dir, "junk.crt")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := vaultRoots(junk); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("a file without a certificate: want a clear error, got %v", err)
	}
}

func TestAVaultCAFileIsTheOnlyRootTrusted(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vault-ca"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := vaultRoots(file)
	if err != nil || pool == nil {
		t.Fatalf("want a pool with the CA, got %v, %v", pool, err)
	}
	cert, _ := x509.ParseCertificate(der)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("the CA does not verify against its own pool: %v", err)
	}
}
