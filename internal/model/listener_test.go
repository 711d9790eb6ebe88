package model_test

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// Paths into the Listener at resources[0].
const (
	lisAt   = "resources[0].listener"
	lisSpec = lisAt + ".spec"
	host0   = lisSpec + ".hosts[0]"
	host1   = lisSpec + ".hosts[1]"
)

// expiredCA mints a CA certificate, signed by ca, whose validity ended an
// hour ago.
func expiredCA(ca *testca.CA, name string) *testca.KeyPair {
	now := time.Now()
	return ca.Issue(testca.Options{CommonName: name, IsCA: true, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
}

func TestValidateListener(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		build    func(t *testing.T) []*policyv1.Resource
		stored   model.Catalog
		errors   []want
		warnings []want
		check    func(t *testing.T, objs []model.Object, rep model.Report)
	}{
		{
			name: "two hosts with a wildcard and a default",
			build: func(t *testing.T) []*policyv1.Resource {
				ca, clients := testca.New(t, "ca"), testca.New(t, "clients")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com", "*.test.com"), names("test.com", "*.test.com", "api.test.com"),
						verifying("require-and-verify", clients.CertPEM()), func(h *policyv1.ListenerHost) { h.VerifyDepth = 3 }),
					host(ca.Server("other.org"), names("other.org"), asDefault,
						func(h *policyv1.ListenerHost) { h.Minversion, h.Alpn = "1.3", []string{"http/1.1"} }),
				)}
			},
			check: func(t *testing.T, objs []model.Object, rep model.Report) {
				l := objs[0].Listener
				if l.Name != "public" || l.Address != "127.0.0.1:8443" || l.Default != 1 || len(l.Hosts) != 2 {
					t.Fatalf("listener = %+v", l)
				}
				a, b := l.Hosts[0], l.Hosts[1]
				if !slices.Equal(a.Hostnames, []string{"test.com", "*.test.com", "api.test.com"}) {
					t.Errorf("hostnames = %v", a.Hostnames)
				}
				if a.ClientAuth != tls.RequireAndVerifyClientCert || len(a.ClientCAs) != 1 || a.VerifyDepth != 3 {
					t.Errorf("host 0 client auth = %v, %d CAs, depth %d", a.ClientAuth, len(a.ClientCAs), a.VerifyDepth)
				}
				if a.Certificate == nil || a.Certificate.Leaf == nil || a.Certificate.PrivateKey == nil {
					t.Errorf("host 0 certificate = %+v, want leaf and key", a.Certificate)
				}
				if b.ClientAuth != tls.NoClientCert || b.ClientCAs != nil || b.MinVersion != tls.VersionTLS13 || !slices.Equal(b.ALPN, []string{"http/1.1"}) {
					t.Errorf("host 1 = auth %v, CAs %v, min %x, alpn %v", b.ClientAuth, b.ClientCAs, b.MinVersion, b.ALPN)
				}
				if a.Fingerprint == "" || a.Fingerprint == b.Fingerprint {
					t.Errorf("fingerprints %q and %q, want two different ones", a.Fingerprint, b.Fingerprint)
				}
				fields := make(map[string]int)
				for _, ci := range rep.Certificates {
					fields[ci.Field]++
				}
				want := map[string]int{host0 + ".certificate.crt": 1, host0 + ".clientCAs": 1, host1 + ".certificate.crt": 1}
				if len(fields) != len(want) {
					t.Errorf("report certificates at %v, want %v", fields, want)
				}
				for f, n := range want {
					if fields[f] != n {
						t.Errorf("report has %d certificates at %s, want %d", fields[f], f, n)
					}
				}
				if len(rep.Warnings) != 0 {
					t.Errorf("warnings:%s", dump(rep.Warnings))
				}
			},
		},
		{
			name: "no default host",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("a.test"), names("a.test")), host(ca.Server("b.test"), names("b.test")))}
			},
			warnings: []want{{lisSpec + ".hosts", "no host has default: true, so hosts[0] (a.test) serves clients that send no SNI"}},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if d := objs[0].Listener.Default; d != 0 {
					t.Errorf("Default = %d, want 0", d)
				}
			},
		},
		{
			name: "two default hosts",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("a.test"), names("a.test"), asDefault), host(ca.Server("b.test"), names("b.test"), asDefault))}
			},
			errors: []want{{host1 + ".default", "hosts[0] is already the default; a Listener has at most one default host"}},
		},

		// Header and address.
		{
			name: "bad name, api version and kind",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				res := listener("Public_TLS", "127.0.0.1:8443", host(ca.Server("test.com"), names("test.com"), asDefault))
				res.GetListener().ApiVersion, res.GetListener().Kind = "v1", "Service"
				return []*policyv1.Resource{res}
			},
			errors: []want{
				{lisAt + ".metadata.name", `try "public-tls"`},
				{lisAt + ".apiVersion", `set apiVersion: "keyway.dev/v1alpha1"`},
				{lisAt + ".kind", "set kind: Listener or leave it out"},
			},
		},
		{
			name: "address missing",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "", host(ca.Server("test.com"), names("test.com"), asDefault))}
			},
			errors: []want{{lisSpec + ".address", "address is required"}},
		},
		{
			name: "address without port or host",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Server("test.com")
				return []*policyv1.Resource{
					listener("a", "127.0.0.1", host(kp, names("test.com"), asDefault)),
					listener("b", ":8443", host(kp, names("test.com"), asDefault)),
					listener("c", "127.0.0.1:99999", host(kp, names("test.com"), asDefault)),
				}
			},
			errors: []want{
				{"resources[0].listener.spec.address", `address "127.0.0.1" has no port; write host:port, e.g. "127.0.0.1:443"`},
				{"resources[1].listener.spec.address", `address ":8443" has no host; write host:port, e.g. "0.0.0.0:8443"`},
				{"resources[2].listener.spec.address", "give the port to listen on"},
			},
		},
		{
			name: "two listeners on one address in the request",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Server("test.com")
				return []*policyv1.Resource{
					listener("a", "127.0.0.1:8443", host(kp, names("test.com"), asDefault)),
					listener("b", "127.000.0.1:8443", host(kp, names("test.com"), asDefault)),
					listener("c", "[::1]:8443", host(kp, names("test.com"), asDefault)),
					listener("d", "[0:0::1]:8443", host(kp, names("test.com"), asDefault)),
				}
			},
			errors: []want{
				// 127.000.0.1 is not an IP address to Go, so it is not
				// the same address; it is a bad host name.
				{"resources[1].listener.spec.address", `host "127.000.0.1" is neither a DNS name`},
				{"resources[3].listener.spec.address", `address "[0:0::1]:8443" is already used by Listener "c" (in this request); one address takes one Listener`},
			},
		},
		{
			name: "listener on the address of a stored one",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Server("test.com")
				return []*policyv1.Resource{
					listener("new", "127.0.0.1:8443", host(kp, names("test.com"), asDefault)),
					// Replacing the stored "moved" frees its old address.
					listener("moved", "127.0.0.1:9443", host(kp, names("test.com"), asDefault)),
					listener("takes-old", "127.0.0.1:7443", host(kp, names("test.com"), asDefault)),
				}
			},
			stored: &fakeCatalog{listeners: []model.Listener{
				{Name: "public", Address: "127.0.0.1:8443"},
				{Name: "moved", Address: "127.0.0.1:7443"},
			}},
			errors: []want{{"resources[0].listener.spec.address", `address "127.0.0.1:8443" is already used by Listener "public" (stored)`}},
		},

		// Hosts and hostnames.
		{
			name: "no hosts",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443")}
			},
			warnings: []want{{lisSpec + ".hosts", `Listener "public" has no hosts and no tls-inbound binding targets it, so proxy nodes will not serve it yet`}},
		},
		{
			name: "host without hostnames",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(ca.Server("test.com"), nil, asDefault))}
			},
			errors: []want{{host0 + ".hostnames", "hostnames is required: list the SNI names this host serves"}},
		},
		{
			name: "bad hostnames",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com", "Test.COM", "api.*.test.com", "*", "10.0.0.1", "test.com:443", ""), asDefault))}
			},
			errors: []want{
				{host0 + ".hostnames[1]", `"Test.COM" has uppercase letters; hostnames are lowercase (SNI compares them so): write "test.com"`},
				{host0 + ".hostnames[2]", `a wildcard is allowed only as the whole first label, as in "*.example.com"`},
				{host0 + ".hostnames[3]", `"*": a wildcard is allowed only as the whole first label`},
				{host0 + ".hostnames[4]", `"10.0.0.1" is an IP address; clients send only DNS names in SNI`},
				{host0 + ".hostnames[5]", `"test.com:443" is not a DNS name`},
				{host0 + ".hostnames[6]", "hostname is empty"},
			},
		},
		{
			name: "hostname twice in a listener",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Server("test.com", "*.test.com")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(kp, names("test.com", "*.test.com"), asDefault), host(kp, names("api.test.com", "*.test.com")))}
			},
			errors: []want{{host1 + ".hostnames[1]", `hostname "*.test.com" is also at ` + host0 + ".hostnames[1]; each hostname is served by one host of a Listener: remove one"}},
		},

		// Server certificate.
		{
			name: "certificate missing",
			build: func(t *testing.T) []*policyv1.Resource {
				h := &policyv1.ListenerHost{Hostnames: names("test.com"), Default: true}
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", h)}
			},
			errors: []want{{host0 + ".certificate", "certificate is required: give crt"}},
		},
		{
			name: "key missing",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				h := host(ca.Server("test.com"), names("test.com"), asDefault)
				h.Certificate.Key = ""
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", h)}
			},
			errors: []want{{host0 + ".certificate.key", "certificate.key is missing: give the private key of the server certificate"}},
		},
		{
			name: "crt is not PEM",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				h := host(ca.Server("test.com"), names("test.com"), asDefault)
				h.Certificate.Crt = "MIIB…"
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", h)}
			},
			errors: []want{{host0 + ".certificate.crt", "certificate.crt is not PEM"}},
		},
		{
			name: "key of another certificate",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				h := host(ca.Server("test.com"), names("test.com"), asDefault)
				h.Certificate.Key = string(ca.Server("test.com").KeyPEM)
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", h)}
			},
			errors: []want{{host0 + ".certificate.key", `certificate.key does not match the certificate "CN=test.com"`}},
		},
		{
			name: "expired server certificate",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(ca.Expired("test.com"), names("test.com"), asDefault))}
			},
			errors: []want{{host0 + ".certificate.crt", `the server certificate ("CN=test.com") expired at `}},
		},
		{
			name: "rsa 1024 server key",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(ca.RSA("test.com", 1024), names("test.com"), asDefault))}
			},
			errors: []want{{host0 + ".certificate.key", "the RSA key is 1024 bits; keys must be at least 2048 bits"}},
		},
		{
			name: "rsa 2048 server key accepted",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(ca.RSA("test.com", 2048), names("test.com"), asDefault))}
			},
		},
		{
			name: "certificate for client auth only",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(clientOnly(t, ca, "test.com"), names("test.com"), asDefault))}
			},
			errors: []want{{host0 + ".certificate.crt", "is not for server authentication (its extended key usage lacks serverAuth), so clients will refuse it; reissue it with extendedKeyUsage = serverAuth"}},
		},
		{
			name: "hostname the certificate does not cover",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com", "www.test.com"), asDefault))}
			},
			errors: []want{{host0 + ".hostnames[1]", `hostname "www.test.com" is not covered by the server certificate "CN=test.com" (its DNS SANs are test.com), so clients will refuse the connection; reissue the certificate with a SAN for it, e.g. ` + "`openssl req -new -key key.pem -subj \"/CN=www.test.com\" -addext \"subjectAltName=DNS:www.test.com\""}},
		},
		{
			name: "wildcard SAN covers one label only",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("*.test.com"), names("api.test.com", "*.test.com", "a.b.test.com", "test.com", "*.api.test.com"), asDefault))}
			},
			errors: []want{
				{host0 + ".hostnames[2]", `hostname "a.b.test.com" is not covered`},
				{host0 + ".hostnames[3]", `hostname "test.com" is not covered`},
				{host0 + ".hostnames[4]", `subjectAltName=DNS:*.api.test.com`},
			},
		},
		{
			name: "exact SAN does not cover a wildcard hostname",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("api.test.com"), names("*.test.com"), asDefault))}
			},
			errors: []want{{host0 + ".hostnames[0]", `hostname "*.test.com" is not covered`}},
		},
		{
			// The API7 guide's server certificate: accepted, with a warning
			// naming the clients that refuse it and the openssl fix.
			name: "cn-only server certificate whose CN is the hostname warns",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(ca.CNOnly("test.com"), names("test.com"), asDefault))}
			},
			warnings: []want{{host0 + ".hostnames[0]", "curl and other OpenSSL-based clients accept it, but browsers (Chrome, Firefox, Safari) and Go clients refuse it"}},
		},
		{
			name: "cn-only server certificate for another name",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", host(ca.CNOnly("test.com"), names("api.test.com"), asDefault))}
			},
			errors: []want{{host0 + ".hostnames[0]", "(it has no DNS SAN (clients ignore the CN))"}},
		},
		{
			name: "chain with intermediate",
			build: func(t *testing.T) []*policyv1.Resource {
				root := testca.New(t, "root")
				inter := root.Intermediate("issuing")
				kp := inter.Server("test.com")
				h := host(kp, names("test.com"), asDefault)
				h.Certificate.Crt = string(kp.CertPEM) + string(inter.CertPEM())
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", h)}
			},
			check: func(t *testing.T, objs []model.Object, rep model.Report) {
				if n := len(objs[0].Listener.Hosts[0].Certificate.Certificate); n != 2 {
					t.Errorf("chain has %d certificates, want 2", n)
				}
				if n := len(rep.Certificates); n != 2 {
					t.Errorf("report has %d certificates, want leaf and intermediate", n)
				}
			},
		},

		// Client authentication.
		{
			name: "each client auth mode",
			build: func(t *testing.T) []*policyv1.Resource {
				ca, clients := testca.New(t, "ca"), testca.New(t, "clients")
				var hosts []*policyv1.ListenerHost
				for i, mode := range []string{"", "none", "request", "require", "verify-if-given", "require-and-verify"} {
					name := string(rune('a'+i)) + ".test"
					opt := func(h *policyv1.ListenerHost) { h.ClientAuth = mode }
					if strings.Contains(mode, "verify") {
						opt = verifying(mode, clients.CertPEM())
					}
					hosts = append(hosts, host(ca.Server(name), names(name), opt))
				}
				hosts[0].Default = true
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", hosts...)}
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				want := []tls.ClientAuthType{tls.NoClientCert, tls.NoClientCert, tls.RequestClientCert, tls.RequireAnyClientCert, tls.VerifyClientCertIfGiven, tls.RequireAndVerifyClientCert}
				for i, h := range objs[0].Listener.Hosts {
					if h.ClientAuth != want[i] {
						t.Errorf("hosts[%d].ClientAuth = %v, want %v", i, h.ClientAuth, want[i])
					}
					if verifies := i >= 4; verifies != (len(h.ClientCAs) == 1) {
						t.Errorf("hosts[%d] has %d client CAs", i, len(h.ClientCAs))
					}
				}
			},
		},
		{
			name: "unknown client auth",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com"), asDefault, func(h *policyv1.ListenerHost) { h.ClientAuth = "require_and_verify" }))}
			},
			errors: []want{{host0 + ".clientAuth", `clientAuth "require_and_verify" is not supported; use one of "none", "request", "require", "verify-if-given", "require-and-verify": did you mean "require-and-verify"?`}},
		},
		{
			name: "verifying without client CAs",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("a.test"), names("a.test"), asDefault, verifying("require-and-verify")),
					host(ca.Server("b.test"), names("b.test"), verifying("verify-if-given")))}
			},
			errors: []want{
				{host0 + ".clientCAs", "clientCAs is required with clientAuth: require-and-verify: give the PEM of the CA certificates that issue client certificates"},
				{host1 + ".clientCAs", "clientCAs is required with clientAuth: verify-if-given"},
			},
		},
		{
			name: "client CAs that would be ignored",
			build: func(t *testing.T) []*policyv1.Resource {
				ca, clients := testca.New(t, "ca"), testca.New(t, "clients")
				var hosts []*policyv1.ListenerHost
				for i, mode := range []string{"", "none", "request", "require"} {
					name := string(rune('a'+i)) + ".test"
					hosts = append(hosts, host(ca.Server(name), names(name), verifying(mode, clients.CertPEM())))
				}
				hosts[0].Default = true
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443", hosts...)}
			},
			errors: []want{
				{host0 + ".clientCAs", "clientCAs would be ignored with clientAuth: none, which does not verify client certificates; use clientAuth: verify-if-given or require-and-verify"},
				{host1 + ".clientCAs", "clientCAs would be ignored with clientAuth: none"},
				{lisSpec + ".hosts[2].clientCAs", "clientCAs would be ignored with clientAuth: request"},
				{lisSpec + ".hosts[3].clientCAs", "clientCAs would be ignored with clientAuth: require,"},
			},
		},
		{
			name: "expired CA next to its successor",
			build: func(t *testing.T) []*policyv1.Resource {
				ca, clients := testca.New(t, "ca"), testca.New(t, "clients")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com"), asDefault, verifying("require-and-verify", expiredCA(ca, "old-ca").CertPEM, clients.CertPEM())))}
			},
			warnings: []want{{host0 + ".clientCAs", `clientCAs certificate 1 ("CN=old-ca") expired at`}},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if n := len(objs[0].Listener.Hosts[0].ClientCAs); n != 2 {
					t.Errorf("%d client CAs, want both", n)
				}
			},
		},
		{
			name: "every client CA expired",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com"), asDefault, verifying("verify-if-given", expiredCA(ca, "old-1").CertPEM, expiredCA(ca, "old-2").CertPEM)))}
			},
			errors: []want{
				{host0 + ".clientCAs", `clientCAs certificate 1 ("CN=old-1") expired at`},
				{host0 + ".clientCAs", `clientCAs certificate 2 ("CN=old-2") expired at`},
			},
		},
		{
			name: "client CA that is not a CA",
			build: func(t *testing.T) []*policyv1.Resource {
				ca, clients := testca.New(t, "ca"), testca.New(t, "clients")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com"), asDefault, verifying("require-and-verify", clients.CertPEM(), clients.Client("alice").CertPEM)))}
			},
			errors: []want{{host0 + ".clientCAs", `clientCAs certificate 2 ("CN=alice") is not a CA certificate`}},
		},
		{
			name: "client CAs holding a key",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Server("test.com")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(kp, names("test.com"), asDefault, verifying("require-and-verify", ca.CertPEM(), kp.KeyPEM)))}
			},
			errors: []want{{host0 + ".clientCAs", "clientCAs holds a private key"}},
		},
		{
			name: "verify depth without verification",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com"), asDefault, func(h *policyv1.ListenerHost) { h.ClientAuth, h.VerifyDepth = "require", 2 }))}
			},
			warnings: []want{{host0 + ".verifyDepth", "verifyDepth is ignored because client certificates are not verified with clientAuth: require"}},
		},

		// Versions, ciphers and ALPN: the tls-outbound rules.
		{
			name: "versions, ciphers and alpn as for tls-outbound",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("a.test"), names("a.test"), asDefault, func(h *policyv1.ListenerHost) {
						h.Minversion, h.Maxversion = "1.3", "1.2"
					}),
					host(ca.Server("b.test"), names("b.test"), func(h *policyv1.ListenerHost) {
						h.Minversion, h.Maxversion = "TLSv1.2", "1.2"
						h.Ciphers = []string{"ECDHE-RSA-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"}
						h.Alpn = []string{"h2", "http2", "h2"}
					}),
					host(ca.Server("c.test"), names("c.test"), func(h *policyv1.ListenerHost) { h.Maxversion = "TLSv1.0" }),
				)}
			},
			errors: []want{
				{host0 + ".minversion", "minversion 1.3 is above maxversion 1.2"},
				{lisSpec + ".hosts[2].maxversion", `maxversion "TLSv1.0" is not a TLS version this gateway supports; use "1.1", "1.2" or "1.3"`},
				{host1 + ".ciphers[0]", `"ECDHE-RSA-AES128-GCM-SHA256" is an OpenSSL name; write the IANA name "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"`},
				{host1 + ".ciphers[1]", `"TLS_AES_128_GCM_SHA256" is a TLS 1.3 suite, but maxversion is 1.2`},
				{host1 + ".alpn[1]", `"http2" is not an ALPN protocol this gateway speaks to clients; use "h2" and/or "http/1.1", in order of preference: did you mean "h2"?`},
				{host1 + ".alpn[2]", `"h2" is listed twice`},
			},
			warnings: []want{{host1 + ".ciphers[2]", "is weak (CBC mode)"}},
		},
		{
			name: "tls 1.1 without ciphers",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1:8443",
					host(ca.Server("test.com"), names("test.com"), asDefault, func(h *policyv1.ListenerHost) { h.Minversion = "1.1" }))}
			},
			errors: []want{{host0 + ".minversion", "TLS 1.1 has no default cipher suites"}},
		},

		{
			name: "every problem at once",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return []*policyv1.Resource{listener("public", "127.0.0.1",
					host(ca.Expired("test.com"), names("test.com", "www.test.com"), asDefault, verifying("require-and-verify"), func(h *policyv1.ListenerHost) { h.Alpn = []string{"spdy"} }),
					host(ca.Server("test.com"), names("test.com"), asDefault))}
			},
			errors: []want{
				{lisSpec + ".address", "has no port"},
				{host0 + ".certificate.crt", "expired at"},
				{host0 + ".clientCAs", "clientCAs is required"},
				{host0 + ".alpn[0]", `"spdy" is not an ALPN protocol`},
				{host1 + ".hostnames[0]", `hostname "test.com" is also at ` + host0 + ".hostnames[0]"},
				{host1 + ".default", "hosts[0] is already the default"},
			},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resources := tc.build(t)
			objs, rep := model.Validate(resources, tc.stored, time.Now())
			checkViolations(t, rep, tc.errors, tc.warnings)
			if len(objs) != len(resources) {
				t.Fatalf("got %d objects for %d resources", len(objs), len(resources))
			}
			for i, o := range objs {
				if o.Listener == nil || o.Ref().Kind != model.KindListener {
					t.Errorf("objs[%d] = %+v, want a Listener", i, o)
				}
			}
			if tc.check != nil {
				if !rep.OK() {
					t.Fatalf("errors:%s", dump(rep.Errors))
				}
				tc.check(t, objs, rep)
			}
		})
	}
}

func TestDecodeListener(t *testing.T) {
	t.Parallel()
	ca, clients := testca.New(t, "ca"), testca.New(t, "clients")

	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		kp := ca.Server("test.com")
		obj, err := model.Decode(listener("public", "127.0.0.1:8443", host(kp, names("test.com"))))
		if err != nil {
			t.Fatal(err)
		}
		l := obj.Listener
		if l == nil || l.Name != "public" || l.Address != "127.0.0.1:8443" || l.Default != 0 || len(l.Hosts) != 1 {
			t.Fatalf("listener = %+v", l)
		}
		h := l.Hosts[0]
		if h.ClientAuth != tls.NoClientCert || h.ClientCAs != nil || h.VerifyDepth != 0 {
			t.Errorf("client auth = %v, CAs %v, depth %d; want none", h.ClientAuth, h.ClientCAs, h.VerifyDepth)
		}
		if h.MinVersion != tls.VersionTLS12 || h.MaxVersion != tls.VersionTLS13 || h.CipherSuites != nil || !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) {
			t.Errorf("protocol = %x..%x suites %v alpn %v; want 1.2..1.3, Go's suites, [h2 http/1.1]", h.MinVersion, h.MaxVersion, h.CipherSuites, h.ALPN)
		}
		if c := h.Certificate; c == nil || !c.Leaf.Equal(kp.Cert) || len(c.Certificate) != 1 {
			t.Errorf("certificate = %+v, want the server leaf", c)
		}
		if len(h.Fingerprint) != 64 {
			t.Errorf("fingerprint = %q, want hex SHA-256", h.Fingerprint)
		}
	})

	t.Run("expired material decodes", func(t *testing.T) {
		t.Parallel()
		expired := ca.Expired("test.com")
		obj, err := model.Decode(listener("public", "127.0.0.1:8443",
			host(expired, names("test.com"), verifying("require-and-verify", expiredCA(clients, "old-ca").CertPEM))))
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		h := obj.Listener.Hosts[0]
		if h.Certificate == nil || !h.Certificate.Leaf.Equal(expired.Cert) || len(h.ClientCAs) != 1 {
			t.Fatalf("host = %+v, want the expired leaf and CA, so that the handshake reports them", h)
		}
	})

	for name, tc := range map[string]struct {
		res  *policyv1.Resource
		want string
	}{
		"uncovered hostname": {
			res:  listener("public", "127.0.0.1:8443", host(ca.Server("test.com"), names("other.test"))),
			want: `listener.spec.hosts[0].hostnames[0]: hostname "other.test" is not covered`,
		},
		"client CAs that would be ignored": {
			res:  listener("public", "127.0.0.1:8443", host(ca.Server("test.com"), names("test.com"), verifying("request", clients.CertPEM()))),
			want: "listener.spec.hosts[0].clientCAs: clientCAs would be ignored",
		},
		"non-CA client CA": {
			res:  listener("public", "127.0.0.1:8443", host(ca.Server("test.com"), names("test.com"), verifying("require-and-verify", clients.Client("bob").CertPEM))),
			want: "is not a CA certificate",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := model.Decode(tc.res)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "model: decoding Listener/public: ") {
				t.Fatalf("Decode error = %v, want one starting with the listener and containing %q", err, tc.want)
			}
		})
	}
}

func TestListenerFingerprint(t *testing.T) {
	t.Parallel()
	ca, clients := testca.New(t, "ca"), testca.New(t, "clients")
	kp := ca.Server("test.com", "www.test.com")
	base := func(options ...func(*policyv1.ListenerHost)) *policyv1.ListenerHost {
		return host(kp, names("test.com"), append([]func(*policyv1.ListenerHost){verifying("require-and-verify", clients.CertPEM())}, options...)...)
	}
	fp := func(t *testing.T, h *policyv1.ListenerHost) string {
		t.Helper()
		obj, err := model.Decode(listener("public", "127.0.0.1:8443", h))
		if err != nil {
			t.Fatal(err)
		}
		return obj.Listener.Hosts[0].Fingerprint
	}
	want := fp(t, base())
	if again := fp(t, base()); again != want {
		t.Fatalf("fingerprint changed between two decodes: %s, %s", want, again)
	}

	// The same key in another encoding is the same context: only the public
	// key enters the fingerprint, never private key bytes.
	sec1, err := x509.MarshalECPrivateKey(kp.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if got := fp(t, base(func(h *policyv1.ListenerHost) {
		h.Certificate.Key = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	})); got != want {
		t.Errorf("re-encoding the key changed the fingerprint")
	}
	same := map[string]func(*policyv1.ListenerHost){
		"defaults spelled out": func(h *policyv1.ListenerHost) {
			h.Minversion, h.Maxversion, h.Alpn = "TLS1.2", "1.3", []string{"h2", "http/1.1"}
		},
		"other hostnames": func(h *policyv1.ListenerHost) { h.Hostnames = names("www.test.com") },
		"default flag":    asDefault,
	}
	for name, change := range same {
		if got := fp(t, base(change)); got != want {
			t.Errorf("%s changed the fingerprint", name)
		}
	}

	newCA := testca.New(t, "clients-2")
	different := map[string]func(*policyv1.ListenerHost){
		"another client CA":   verifying("require-and-verify", newCA.CertPEM()),
		"a second client CA":  verifying("require-and-verify", clients.CertPEM(), newCA.CertPEM()),
		"client CAs reversed": verifying("require-and-verify", newCA.CertPEM(), clients.CertPEM()),
		"verify if given":     verifying("verify-if-given", clients.CertPEM()),
		"no client auth":      verifying(""),
		"min version":         func(h *policyv1.ListenerHost) { h.Minversion = "1.3" },
		"max version":         func(h *policyv1.ListenerHost) { h.Maxversion = "1.2" },
		"ciphers":             func(h *policyv1.ListenerHost) { h.Ciphers = []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"} },
		"alpn order":          func(h *policyv1.ListenerHost) { h.Alpn = []string{"http/1.1", "h2"} },
		"verify depth":        func(h *policyv1.ListenerHost) { h.VerifyDepth = 2 },
		"server certificate":  func(h *policyv1.ListenerHost) { h.Certificate = keyPair(ca.Server("test.com")) },
	}
	seen := map[string]string{want: "base"}
	for name, change := range different {
		got := fp(t, base(change))
		if prev, dup := seen[got]; dup {
			t.Errorf("%s gives the same fingerprint as %s", name, prev)
		}
		seen[got] = name
	}

	// An outbound context never shares a fingerprint with an inbound one.
	obj, err := model.Decode(binding(t, "b", "orders", with(verified(ca), "certificate", clientCert(kp))))
	if err != nil {
		t.Fatal(err)
	}
	if _, dup := seen[obj.Binding.Outbound.Fingerprint]; dup {
		t.Errorf("an outbound fingerprint equals a listener host's")
	}
}
