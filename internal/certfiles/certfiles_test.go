package certfiles_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"keyway.dev/internal/certfiles"
	"keyway.dev/internal/testca"
)

// files writes kp where a Secret volume would put it.
func files(t *testing.T, dir string, kp *testca.KeyPair) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	// Write beside, then rename: what a careful writer does; the test of a
	// half-written pair writes in place.
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, kp.CertPEM}, {keyFile, kp.KeyPEM}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// presented is the client certificate a real TLS server on loopback sees
// when a client with kp's GetClientCertificate connects.
func presented(t *testing.T, ca *testca.CA, kp *certfiles.KeyPair) string {
	t.Helper()
	srvPair := ca.Server("secrets.internal")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srvPair.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- "handshake: " + err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		ServerName: "secrets.internal", RootCAs: ca.Pool(),
		GetClientCertificate: kp.GetClientCertificate,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// TLS 1.3: the server verifies the client certificate after the
	// client's handshake; a read waits for it.
	_ = conn.SetReadDeadline(deadline())
	var b [1]byte
	_, _ = conn.Read(b[:])
	return <-got
}

// TestRotatedFilesAreServedAtTheNextHandshake: a new key pair written over
// the files is presented at the next handshake, with no restart.
func TestRotatedFilesAreServedAtTheNextHandshake(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "internal CA")
	dir := t.TempDir()
	certFile, keyFile := files(t, dir, ca.Client("node-a"))
	kp, err := certfiles.Load(certFile, keyFile, certfiles.WithCheckInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	if got := presented(t, ca, kp); got != "node-a" {
		t.Fatalf("first handshake presented %q, want node-a", got)
	}
	files(t, dir, ca.Client("node-a-renewed"))
	if got := presented(t, ca, kp); got != "node-a-renewed" {
		t.Fatalf("after rotation the handshake presented %q, want node-a-renewed", got)
	}
	if kp.Leaf().Subject.CommonName != "node-a-renewed" {
		t.Errorf("Leaf is %q, want the rotated certificate", kp.Leaf().Subject.CommonName)
	}
	if reloads, failures, _ := kp.Stats(); reloads != 1 || failures != 0 {
		t.Errorf("reloads, failures = %d, %d; want 1, 0", reloads, failures)
	}
}

// TestBadFilesKeepTheLastGoodPair: a key that does not match the new
// certificate (a rotation half done) keeps the last good pair, and the pair
// is taken once the key is written too.
func TestBadFilesKeepTheLastGoodPair(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "internal CA")
	dir := t.TempDir()
	certFile, keyFile := files(t, dir, ca.Client("node-a"))
	kp, err := certfiles.Load(certFile, keyFile, certfiles.WithCheckInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	next := ca.Client("node-a-renewed")
	if err := os.WriteFile(certFile, next.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := presented(t, ca, kp); got != "node-a" {
		t.Fatalf("with a mismatched key the handshake presented %q, want the last good node-a", got)
	}
	if _, failures, lastErr := kp.Stats(); failures == 0 || lastErr == nil {
		t.Errorf("failures = %d, lastErr = %v; want the mismatch counted and kept", failures, lastErr)
	}
	if err := os.WriteFile(keyFile, next.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := presented(t, ca, kp); got != "node-a-renewed" {
		t.Fatalf("once the key is written the handshake presented %q, want node-a-renewed", got)
	}
	if _, _, lastErr := kp.Stats(); lastErr != nil {
		t.Errorf("lastErr = %v after a good pair loaded, want nil", lastErr)
	}
}

func TestLoadRefusesAMismatchedPair(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "internal CA")
	dir := t.TempDir()
	certFile, keyFile := files(t, dir, ca.Client("a"))
	if err := os.WriteFile(keyFile, ca.Client("b").KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := certfiles.Load(certFile, keyFile); err == nil {
		t.Fatal("Load accepted a key that does not match the certificate")
	}
	if _, err := certfiles.Load(filepath.Join(dir, "missing.crt"), keyFile); err == nil {
		t.Fatal("Load accepted a missing certificate file")
	}
}

func deadline() time.Time { return time.Now().Add(5 * time.Second) }

// TestBundleFollowsItsFile: a CA bundle rewritten is trusted at the next
// look; one that holds no certificate keeps the last good set, and says
// why.
func TestBundleFollowsItsFile(t *testing.T) {
	t.Parallel()
	a, b := testca.New(t, "CA a"), testca.New(t, "CA b")
	file := filepath.Join(t.TempDir(), "ca.crt")
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(file+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".new", file); err != nil {
			t.Fatal(err)
		}
	}
	write(a.CertPEM())
	bundle, err := certfiles.LoadBundle(file, certfiles.WithCheckInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	trusts := func(ca *testca.CA) bool {
		_, err := ca.Client("x").Cert.Verify(x509.VerifyOptions{Roots: bundle.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err == nil
	}
	if !trusts(a) || trusts(b) {
		t.Fatal("the first bundle: want a trusted, b not")
	}
	write(append(a.CertPEM(), b.CertPEM()...))
	if !trusts(a) || !trusts(b) || len(bundle.Certificates()) != 2 {
		t.Fatal("the overlap: want a and b trusted")
	}
	write([]byte("not a certificate\n"))
	if !trusts(a) || !trusts(b) {
		t.Fatal("a bundle without a certificate replaced the last good one")
	}
	if _, failures, lastErr := bundle.Stats(); failures == 0 || lastErr == nil {
		t.Errorf("failures = %d, lastErr = %v; want the bad file counted", failures, lastErr)
	}
	write(b.CertPEM())
	if trusts(a) || !trusts(b) {
		t.Fatal("after the overlap: want b trusted, a not")
	}
	if reloads, _, lastErr := bundle.Stats(); reloads != 2 || lastErr != nil {
		t.Errorf("reloads = %d, lastErr = %v; want 2, nil", reloads, lastErr)
	}
	if _, err := certfiles.LoadBundle(filepath.Join(t.TempDir(), "missing.crt")); err == nil {
		t.Error("LoadBundle accepted a missing file")
	}
}
