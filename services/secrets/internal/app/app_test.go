package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/access"
	"keyway.dev/internal/certs"
	"keyway.dev/internal/material"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/secrets/internal/app"
)

// service is a running secrets service with its clients.
type service struct {
	API      secretsv1connect.SecretsServiceClient
	GRPC     secretsv1connect.SecretsServiceClient
	APIURL   string
	Internal string // https://addr
	// InternalCA issued the internal server certificate and the proxy
	// node client certificate.
	InternalCA *testca.CA
	Material   secretsv1connect.MaterialServiceClient
	Bucket     *bucketLog
	Logs       *syncBuffer
	Dir        string
	cancel     context.CancelFunc
	done       chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs the service with cfg filled in: free ports, an internal CA,
// NATS. Backend settings come from the caller.
func start(t *testing.T, cfg app.Config) *service {
	t.Helper()
	return startOn(t, cfg, natstest.Start(t).URL)
}

// startOn is start with the caller's NATS server.
func startOn(t *testing.T, cfg app.Config, natsURL string) *service {
	t.Helper()
	pkiDir := t.TempDir()
	ca := testca.New(t, "keyway internal CA")
	srvCert := ca.Server("keyway-secrets")
	cfg.Listen, cfg.InternalListen = "127.0.0.1:0", "127.0.0.1:0"
	if cfg.Access == (access.Options{}) {
		cfg.Access.InsecureNoAuth = true
	}
	if cfg.InternalCert == "" {
		cfg.InternalCert = writeFile(t, pkiDir, "secrets.crt", srvCert.CertPEM)
		cfg.InternalKey = writeFile(t, pkiDir, "secrets.key", srvCert.KeyPEM)
		cfg.InternalClientCA = writeFile(t, pkiDir, "ca.crt", ca.CertPEM())
	}
	cfg.NATSURL = natsURL
	if cfg.Store.PollInterval == 0 {
		cfg.Store.PollInterval = 200 * time.Millisecond
	}
	logs := &syncBuffer{}
	cfg.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	type addrs struct{ api, internal net.Addr }
	ready := make(chan addrs, 1)
	cfg.OnListen = func(a, i net.Addr) { ready <- addrs{a, i} }

	bucket := watchBucket(t, natsURL)
	ctx, cancel := context.WithCancel(context.Background())
	s := &service{InternalCA: ca, Bucket: bucket, Logs: logs, Dir: cfg.Dir, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- app.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-s.done; err != nil {
			t.Errorf("service stopped with %v", err)
		}
		if t.Failed() {
			t.Logf("--- service logs ---\n%s", logs.String())
		}
	})
	var a addrs
	select {
	case a = <-ready:
	case err := <-s.done:
		t.Fatalf("service exited: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("service not serving after 60s\n%s", logs.String())
	}
	s.APIURL = "http://" + a.api.String()
	s.Internal = "https://" + a.internal.String()
	s.API = secretsv1connect.NewSecretsServiceClient(http.DefaultClient, s.APIURL)
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	s.GRPC = secretsv1connect.NewSecretsServiceClient(&http.Client{Transport: h2c}, s.APIURL, connect.WithGRPC())
	node := ca.Client("proxy-node-1")
	s.Material = material.NewServiceClient(s.Internal, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{node.TLS}, ServerName: "keyway-secrets"})
	return s
}

// bucketLog records every message of the versions bucket.
type bucketLog struct {
	mu      sync.Mutex
	entries []jetstream.KeyValueEntry
	changed chan struct{}
}

func watchBucket(t *testing.T, natsURL string) *bucketLog {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Create the bucket as the service does, so the watch can start first
	// and see every message.
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: secretref.Bucket, History: 5, Storage: jetstream.FileStorage,
		Description: "Keyway secret versions: references, versions and fingerprints, never keys"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IncludeHistory())
	if err != nil {
		t.Fatal(err)
	}
	b := &bucketLog{changed: make(chan struct{})}
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			b.mu.Lock()
			b.entries = append(b.entries, e)
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		}
	}()
	return b
}

// wait returns the first message (in order) for key that matches, waiting
// up to 60 seconds for it.
func (b *bucketLog) wait(t *testing.T, key string, match func(jetstream.KeyValueEntry, *secretsv1.SecretVersion) bool) *secretsv1.SecretVersion {
	t.Helper()
	deadline := time.After(60 * time.Second)
	seen := 0
	for {
		b.mu.Lock()
		entries, changed := b.entries, b.changed
		b.mu.Unlock()
		for _, e := range entries[seen:] {
			if e.Key() != key {
				continue
			}
			var v *secretsv1.SecretVersion
			if e.Operation() == jetstream.KeyValuePut {
				var err error
				if v, err = secretref.DecodeVersion(e.Value()); err != nil {
					t.Fatalf("bucket value of %s: %v", key, err)
				}
			}
			if match(e, v) {
				return v
			}
		}
		seen = len(entries)
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no matching message for %s in the versions bucket within 60s", key)
		}
	}
}

// all is every value written to the bucket so far.
func (b *bucketLog) all() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out [][]byte
	for _, e := range b.entries {
		out = append(out, e.Value())
	}
	return out
}

func put(e jetstream.KeyValueEntry) bool { return e.Operation() == jetstream.KeyValuePut }

func leafFingerprint(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return certs.Fingerprint(cert)
}

// violations returns the field violations of an INVALID_ARGUMENT error.
func violations(t *testing.T, err error) map[string]string {
	t.Helper()
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("want InvalidArgument, got %v", err)
	}
	var ce *connect.Error
	errors.As(err, &ce)
	out := map[string]string{}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			t.Fatal(derr)
		}
		if br, ok := v.(*errdetails.BadRequest); ok {
			for _, fv := range br.GetFieldViolations() {
				out[fv.GetField()] += fv.GetDescription()
			}
		}
	}
	return out
}

// noKeyMaterial fails when any text holds a PEM private key or a piece of
// one of the keys given.
func noKeyMaterial(t *testing.T, what string, texts []string, keys ...[]byte) {
	t.Helper()
	var needles []string
	for _, k := range keys {
		block, _ := pem.Decode(k)
		if block == nil {
			t.Fatalf("not a PEM key")
		}
		b64 := base64.StdEncoding.EncodeToString(block.Bytes)
		// Pieces from the middle of the key's DER, raw and base64: a key
		// printed in any encoding shows one of them.
		mid := len(block.Bytes) / 2
		needles = append(needles, string(block.Bytes[mid:mid+16]), b64[len(b64)/2:len(b64)/2+24])
	}
	for _, text := range texts {
		if strings.Contains(text, "PRIVATE KEY") {
			t.Errorf("%s holds a PEM private key", what)
		}
		for _, n := range needles {
			if strings.Contains(text, n) {
				t.Errorf("%s holds key bytes", what)
			}
		}
	}
}

func TestLocalBackend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, app.Config{Backend: "local", Dir: dir})
	ctx := context.Background()
	ca := testca.New(t, "upstream CA")
	gw := ca.Client("gw")

	resp, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{
		Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM),
	}))
	if err != nil {
		t.Fatal(err)
	}
	a := resp.Msg.GetAlias()
	// A one-day certificate with a day left is valid: a third of its
	// lifetime (8 hours) is the expiry warning for it.
	if a.GetBackend() != secretsv1.Backend_BACKEND_LOCAL || a.GetVersion() == "" || a.GetChain()[0].GetSha256Fingerprint() != gw.Fingerprint() || a.GetChain()[0].GetState() != secretsv1.State_STATE_VALID {
		t.Errorf("PutAlias answered %v", a)
	}
	if a.GetUsage() != secretsv1.Usage_USAGE_CLIENT {
		t.Errorf("usage = %v, want client", a.GetUsage())
	}
	for _, f := range []string{"keystores/edge/gw/cert.pem", "keystores/edge/gw/key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the local backend did not write %s: %v", f, err)
		}
	}
	v := s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, v *secretsv1.SecretVersion) bool { return put(e) })
	if v.GetVersion() != a.GetVersion() || v.GetSha256Fingerprint() != gw.Fingerprint() || !v.GetNotAfter().AsTime().Equal(gw.Cert.NotAfter) {
		t.Errorf("published %v; want version %s fingerprint %s", v, a.GetVersion(), gw.Fingerprint())
	}

	// Reads through Connect and gRPC both, never a key.
	for name, c := range map[string]secretsv1connect.SecretsServiceClient{"connect": s.API, "grpc": s.GRPC} {
		got, err := c.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: "gw"}))
		if err != nil {
			t.Fatalf("%s GetAlias: %v", name, err)
		}
		if got.Msg.GetAlias().GetVersion() != a.GetVersion() {
			t.Errorf("%s GetAlias version %s, want %s", name, got.Msg.GetAlias().GetVersion(), a.GetVersion())
		}
		list, err := c.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
		if err != nil {
			t.Fatalf("%s ListKeystores: %v", name, err)
		}
		if len(list.Msg.GetKeystores()) != 1 || list.Msg.GetKeystores()[0].GetAliases()[0].GetAlias() != "gw" {
			t.Errorf("%s ListKeystores = %v", name, list.Msg)
		}
		js, _ := protojson.Marshal(list.Msg)
		noKeyMaterial(t, name+" ListKeystores", []string{string(js)}, gw.KeyPEM)
	}

	// The material, over mTLS.
	m, err := s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair([]byte(m.Msg.GetCertificatePem()), []byte(m.Msg.GetPrivateKeyPem())); err != nil {
		t.Errorf("fetched material is not a key pair: %v", err)
	}

	// A change made to the files by hand is a new version, published.
	rotated := ca.Client("gw")
	writeFile(t, filepath.Join(dir, "keystores/edge/gw"), "key.pem", rotated.KeyPEM)
	writeFile(t, filepath.Join(dir, "keystores/edge/gw"), "cert.pem", rotated.CertPEM)
	v2 := s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, v *secretsv1.SecretVersion) bool {
		return put(e) && v.GetSha256Fingerprint() == rotated.Fingerprint()
	})
	if v2.GetVersion() == v.GetVersion() {
		t.Errorf("rotation published the same version %s", v2.GetVersion())
	}
	m, err = s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil || leafFingerprint(t, []byte(m.Msg.GetCertificatePem())) != rotated.Fingerprint() {
		t.Errorf("fetch after rotation: %v, %v", m, err)
	}

	// Truststores.
	ts, err := s.API.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "upstream-cas", CertificatesPem: string(ca.CertPEM())}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "truststores/upstream-cas.pem")); err != nil {
		t.Errorf("truststore file: %v", err)
	}
	tv := s.Bucket.wait(t, "truststore.upstream-cas", func(e jetstream.KeyValueEntry, v *secretsv1.SecretVersion) bool { return put(e) })
	if tv.GetVersion() != ts.Msg.GetTruststore().GetVersion() || !ts.Msg.GetTruststore().GetCertificates()[0].GetIsCa() {
		t.Errorf("truststore published %v, answered %v", tv, ts.Msg)
	}
	ft, err := s.Material.FetchTruststore(ctx, connect.NewRequest(&secretsv1.FetchTruststoreRequest{Name: "upstream-cas"}))
	if err != nil || ft.Msg.GetCertificatesPem() != string(ca.CertPEM()) {
		t.Errorf("FetchTruststore: %v", err)
	}

	// Delete: NotFound afterwards, and a delete marker.
	if _, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "gw"})); err != nil {
		t.Fatal(err)
	}
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool {
		return e.Operation() == jetstream.KeyValueDelete
	})
	if _, err := s.API.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: "gw"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("GetAlias after delete: %v, want NotFound", err)
	}
	if _, err := s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "gw"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("second delete: %v, want NotFound", err)
	}
	// A truststore file removed by hand: a delete marker.
	if err := os.Remove(filepath.Join(dir, "truststores/upstream-cas.pem")); err != nil {
		t.Fatal(err)
	}
	s.Bucket.wait(t, "truststore.upstream-cas", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool {
		return e.Operation() == jetstream.KeyValueDelete
	})
}

// The bucket is complete after a start: what the directory held before the
// service started is published, and keys of secrets that are gone are
// deleted.
func TestStartupPublishesEverything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testca.New(t, "CA")
	kp := ca.Server("orders.internal")
	aliasDir := filepath.Join(dir, "keystores", "edge", "orders")
	if err := os.MkdirAll(aliasDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, aliasDir, "cert.pem", kp.CertPEM)
	writeFile(t, aliasDir, "key.pem", kp.KeyPEM)
	writeFile(t, aliasDir, "usage", []byte("server\n"))
	if err := os.MkdirAll(filepath.Join(dir, "truststores"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "truststores"), "cas.pem", ca.CertPEM())

	s := start(t, app.Config{Backend: "local", Dir: dir})
	v := s.Bucket.wait(t, "alias.edge.orders", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool { return put(e) })
	if v.GetSha256Fingerprint() != kp.Fingerprint() {
		t.Errorf("published fingerprint %s, want %s", v.GetSha256Fingerprint(), kp.Fingerprint())
	}
	s.Bucket.wait(t, "truststore.cas", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool { return put(e) })
	got, err := s.API.GetAlias(context.Background(), connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: "orders"}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.GetAlias().GetUsage() != secretsv1.Usage_USAGE_SERVER {
		t.Errorf("usage file not read: %v", got.Msg.GetAlias().GetUsage())
	}
}

func TestPutValidation(t *testing.T) {
	t.Parallel()
	s := start(t, app.Config{Backend: "local", Dir: t.TempDir()})
	ctx := context.Background()
	ca := testca.New(t, "CA")
	gw := ca.Client("gw")
	other := testca.New(t, "other").Client("gw")
	weak := ca.RSA("weak", 1024)
	expired := ca.Expired("old")
	cnOnly := ca.CNOnly("apigee-gw")

	tests := []struct {
		name      string
		req       *secretsv1.PutAliasRequest
		wantField string
		wantText  string
	}{
		{"mismatched key", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "a", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(other.KeyPEM)}, "private_key_pem", "does not match"},
		{"RSA 1024", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "a", CertificatePem: string(weak.CertPEM), PrivateKeyPem: string(weak.KeyPEM)}, "private_key_pem", "at least 2048 bits"},
		{"expired", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "a", CertificatePem: string(expired.CertPEM), PrivateKeyPem: string(expired.KeyPEM)}, "certificate_pem", "expired at"},
		{"PKI on the local backend", &secretsv1.PutAliasRequest{Keystore: "edge", Alias: "a", Pki: &secretsv1.PKISpec{Role: "r", CommonName: "gw"}}, "pki", "--backend vault"},
	}
	for _, tc := range tests {
		for _, dry := range []bool{false, true} {
			tc.req.DryRun = dry
			_, err := s.API.PutAlias(ctx, connect.NewRequest(tc.req))
			vs := violations(t, err)
			if !strings.Contains(vs[tc.wantField], tc.wantText) {
				t.Errorf("%s (dry run %v): violations %v; want %s containing %q", tc.name, dry, vs, tc.wantField, tc.wantText)
			}
		}
	}
	// A CN-only server certificate (the API7 guide's) is stored, with a
	// warning naming the clients that refuse it.
	srv, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "cn-server", CertificatePem: string(cnOnly.CertPEM), PrivateKeyPem: string(cnOnly.KeyPEM), Usage: secretsv1.Usage_USAGE_SERVER}))
	if err != nil {
		t.Fatalf("a CN-only server certificate was refused: %v", err)
	}
	if w := strings.Join(srv.Msg.GetWarnings(), "\n"); !strings.Contains(w, "Go clients refuse it") || !strings.Contains(w, "-copy_extensions copy") {
		t.Errorf("warnings %q do not name the clients that refuse a CN-only server certificate and the openssl fix", w)
	}
	// A CN-only client certificate is accepted (Apigee's gateway certificates).
	resp, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "apigee", CertificatePem: string(cnOnly.CertPEM), PrivateKeyPem: string(cnOnly.KeyPEM), Usage: secretsv1.Usage_USAGE_CLIENT}))
	if err != nil {
		t.Fatalf("CN-only client certificate refused: %v", err)
	}
	if resp.Msg.GetAlias().GetChain()[0].GetDnsNames() != nil {
		t.Errorf("CN-only certificate described with SANs: %v", resp.Msg.GetAlias().GetChain()[0])
	}
	// A dry run stores nothing.
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "dry", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM), DryRun: true})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.API.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: "dry"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("dry run stored the alias: %v", err)
	}
	// Refused puts stored nothing either.
	list, err := s.API.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.Msg.GetKeystores()[0].GetAliases()); n != 2 {
		t.Errorf("%d aliases stored, want only cn-server and apigee", n)
	}
}

func TestMaterialServiceNeedsClientCertificate(t *testing.T) {
	t.Parallel()
	s := start(t, app.Config{Backend: "local", Dir: t.TempDir()})
	ctx := context.Background()
	ca := testca.New(t, "CA")
	gw := ca.Client("gw")
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)})); err != nil {
		t.Fatal(err)
	}
	fetch := func(c secretsv1connect.MaterialServiceClient) error {
		_, err := c.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
		return err
	}
	if err := fetch(s.Material); err != nil {
		t.Fatalf("a proxy node's certificate from the internal CA was refused: %v", err)
	}
	noCert := material.NewServiceClient(s.Internal, &tls.Config{RootCAs: s.InternalCA.Pool(), ServerName: "keyway-secrets"})
	if err := fetch(noCert); err == nil {
		t.Error("a client without a certificate got material")
	}
	stranger := testca.New(t, "another CA").Client("proxy-node-1")
	otherCA := material.NewServiceClient(s.Internal, &tls.Config{RootCAs: s.InternalCA.Pool(), ServerName: "keyway-secrets", Certificates: []tls.Certificate{stranger.TLS}})
	if err := fetch(otherCA); err == nil {
		t.Error("a client certificate from another CA got material")
	}
	// Not on the API port, whatever the protocol.
	for name, opts := range map[string][]connect.ClientOption{"connect": nil, "grpc-web": {connect.WithGRPCWeb()}} {
		onAPI := secretsv1connect.NewMaterialServiceClient(http.DefaultClient, s.APIURL, opts...)
		if err := fetch(onAPI); connect.CodeOf(err) != connect.CodeUnimplemented && connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s: MaterialService on the API port answered %v; want it absent", name, err)
		}
	}
	resp, err := http.Post(s.APIURL+secretsv1connect.MaterialServiceFetchAliasProcedure, "application/json", strings.NewReader(`{"keystore":"edge","alias":"gw"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST %s on the API port: %s, want 404", secretsv1connect.MaterialServiceFetchAliasProcedure, resp.Status)
	}
}

// Logs and every message of the versions bucket, through puts, a rotation
// and fetches, hold no private key.
func TestNoKeyMaterialInLogsOrBucket(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, app.Config{Backend: "local", Dir: dir})
	ctx := context.Background()
	ca := testca.New(t, "CA")
	first, second := ca.Client("gw"), ca.RSA("gw", 2048)
	var keys [][]byte
	for _, kp := range []*testca.KeyPair{first, second} {
		keys = append(keys, kp.KeyPEM)
		if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(kp.CertPEM), PrivateKeyPem: string(kp.KeyPEM)})); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"})); err != nil {
			t.Fatal(err)
		}
	}
	// And a rotation made on disk, noticed by the poll.
	third := ca.Client("gw")
	keys = append(keys, third.KeyPEM)
	writeFile(t, filepath.Join(dir, "keystores/edge/gw"), "key.pem", third.KeyPEM)
	writeFile(t, filepath.Join(dir, "keystores/edge/gw"), "cert.pem", third.CertPEM)
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, v *secretsv1.SecretVersion) bool {
		return put(e) && v.GetSha256Fingerprint() == third.Fingerprint()
	})
	// A refused put (the key in the certificate field) is logged too.
	_, _ = s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "bad", CertificatePem: string(third.KeyPEM), PrivateKeyPem: string(third.KeyPEM)}))

	var texts []string
	for _, b := range s.Bucket.all() {
		texts = append(texts, string(b))
		var v secretsv1.SecretVersion
		if err := proto.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, protojson.Format(&v))
	}
	if len(texts) < 6 {
		t.Fatalf("only %d bucket messages recorded", len(texts)/2)
	}
	noKeyMaterial(t, "the versions bucket", texts, keys...)
	logs := s.Logs.String()
	if !strings.Contains(logs, "alias material fetched") {
		t.Fatalf("the logs were not captured:\n%s", logs)
	}
	noKeyMaterial(t, "the service's logs", []string{logs}, keys...)
}

// A value changed by hand into something unusable (a key that does not
// match) is rejected: the API says so next to the version still served,
// the last good material stays served and published, and the next good
// value is picked up.
func TestBadValueKeepsLastGood(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, app.Config{Backend: "local", Dir: dir})
	ctx := context.Background()
	ca := testca.New(t, "CA")
	good := ca.Client("gw")
	stored, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(good.CertPEM), PrivateKeyPem: string(good.KeyPEM)}))
	if err != nil {
		t.Fatal(err)
	}
	aliasDir := filepath.Join(dir, "keystores/edge/gw")
	writeFile(t, aliasDir, "key.pem", ca.Client("other").KeyPEM)
	a := waitRejected(t, s, "edge", "gw", "")
	if r := a.GetRejection(); r.GetReason() != "key_mismatch" || !strings.Contains(r.GetMessage(), "key.pem does not match the certificate") ||
		a.GetVersion() != stored.Msg.GetAlias().GetVersion() || r.GetVersion() == a.GetVersion() {
		t.Errorf("rejected alias: version %s, rejection %v", a.GetVersion(), r)
	}
	if !strings.Contains(s.Logs.String(), "secret rejected") {
		t.Errorf("no log line says the value was rejected")
	}
	m, err := s.Material.FetchAlias(ctx, connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: "edge", Alias: "gw"}))
	if err != nil || m.Msg.GetPrivateKeyPem() != string(good.KeyPEM) {
		t.Errorf("after a bad value: %v; want the last good key", err)
	}
	next := ca.Client("gw")
	writeFile(t, aliasDir, "key.pem", next.KeyPEM)
	writeFile(t, aliasDir, "cert.pem", next.CertPEM)
	s.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, v *secretsv1.SecretVersion) bool {
		return put(e) && v.GetSha256Fingerprint() == next.Fingerprint()
	})
	if got := getAlias(t, s, "edge", "gw"); got.GetStatus() != secretsv1.Status_STATUS_OK || got.GetRejection() != nil {
		t.Errorf("after a good value: status %v, rejection %v; want ok", got.GetStatus(), got.GetRejection())
	}
}

// NATS away: puts still succeed (the backend holds the secret), the
// versions wait, and they are published once NATS is back.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	s := startOn(t, app.Config{Backend: "local", Dir: t.TempDir()}, ns.URL)
	ctx := context.Background()
	ca := testca.New(t, "CA")
	first, second := ca.Client("a"), ca.Client("b")
	if _, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "a", CertificatePem: string(first.CertPEM), PrivateKeyPem: string(first.KeyPEM)})); err != nil {
		t.Fatal(err)
	}
	s.Bucket.wait(t, "alias.edge.a", func(e jetstream.KeyValueEntry, _ *secretsv1.SecretVersion) bool { return put(e) })

	ns.Stop()
	// A put through the API is refused: its audit record cannot be
	// written (docs/reference/audit.md), so nothing is stored.
	_, err := s.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "b", CertificatePem: string(second.CertPEM), PrivateKeyPem: string(second.KeyPEM)}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("a put with NATS away: %v; want Unavailable naming the audit trail", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "keystores", "edge", "b")); !os.IsNotExist(err) {
		t.Fatalf("the refused put was stored: %v", err)
	}
	// Whether a secret is in use cannot be told without the configuration
	// bucket: the delete is refused, saying why.
	_, err = s.API.DeleteAlias(ctx, connect.NewRequest(&secretsv1.DeleteAliasRequest{Keystore: "edge", Alias: "a"}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "cannot tell whether alias edge/a is in use") ||
		!strings.Contains(err.Error(), "configuration bucket keyway-config in NATS") || !strings.Contains(err.Error(), "nothing was deleted") {
		t.Errorf("a delete with NATS away: %v; want Unavailable saying the users cannot be determined", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "keystores", "edge", "a", "key.pem")); err != nil {
		t.Errorf("the refused delete removed the alias: %v", err)
	}
	// A change made in the backend meanwhile (by hand, by another tool)
	// is read by the poll, and its version waits for NATS.
	alias := filepath.Join(s.Dir, "keystores", "edge", "b")
	if err := os.MkdirAll(alias, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, alias, "key.pem", second.KeyPEM)
	writeFile(t, alias, "cert.pem", second.CertPEM)
	testwait.Until(t, 60*time.Second, "a log line saying the version waits", func() bool { return strings.Contains(s.Logs.String(), "cannot publish a secret version") })

	ns.Restart()
	js := ns.JetStream(t)
	testwait.Until(t, 60*time.Second, "the waiting version to be published", func() bool {
		kv, err := js.KeyValue(ctx, secretref.Bucket)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, "alias.edge.b")
		if err != nil {
			return false
		}
		v, err := secretref.DecodeVersion(e.Value())
		return err == nil && v.GetSha256Fingerprint() == second.Fingerprint()
	})
}
