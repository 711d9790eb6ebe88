package model_test

import (
	"crypto/tls"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/model"
	"keyway.dev/internal/testca"
)

// Paths of the binding built by withService.
const (
	cfgAt  = "resources[1].policyBinding.spec.config"
	specAt = "resources[1].policyBinding.spec"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// build makes the request; certificates are minted inside, per case.
		build  func(t *testing.T) []*policyv1.Resource
		stored model.Catalog
		// errors are exactly the errors expected, in any order.
		errors []want
		// warnings must be among the warnings reported.
		warnings []want
		// check inspects the result further.
		check func(t *testing.T, objs []model.Object, rep model.Report)
	}{
		// Client certificate and key.
		{
			name: "rsa 1024 key",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", clientCert(ca.RSA("client", 1024))))
			},
			errors: []want{{cfgAt + ".certificate.key", "the RSA key is 1024 bits; keys must be at least 2048 bits (as Flex requires): make a new key with `openssl genrsa -out key.pem 2048`"}},
		},
		{
			// Flex's sample as printed, pasted unchanged.
			name: "the guide's commented-out placeholders",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, map[string]any{"skipValidation": false,
					"trustedCA": "# -----BEGIN CERTIFICATE-----\n# insert certificate\n# -----END CERTIFICATE-----\n",
					"certificate": map[string]any{
						"key": "# -----BEGIN PRIVATE KEY-----\n# insert certificate key\n# -----END PRIVATE KEY-----\n",
						"crt": "# -----BEGIN CERTIFICATE-----\n# insert certificate\n# -----END CERTIFICATE-----\n",
					}})
			},
			errors: []want{
				{cfgAt + ".trustedCA", `trustedCA holds a PEM block commented out with '#': line 1 of the value is "# -----BEGIN CERTIFICATE-----"; in a YAML block scalar (|) a '#' does not start a comment, it is part of the PEM; remove the '#' (and the space after it) from the start of each line of the block, and put the PEM itself`},
				{cfgAt + ".certificate.key", `holds a PEM block commented out with '#': line 1 of the value is "# -----BEGIN PRIVATE KEY-----"`},
				{cfgAt + ".certificate.crt", `holds a PEM block commented out with '#': line 1 of the value is "# -----BEGIN CERTIFICATE-----"`},
			},
		},
		{
			// The PEM pasted in place of "# insert certificate" only: its
			// boundary lines keep their '#'.
			name: "real PEM between commented boundary lines",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Client("client")
				comment := func(pem []byte) string {
					lines := strings.Split(strings.TrimSpace(string(pem)), "\n")
					lines[0], lines[len(lines)-1] = "# "+lines[0], "  # "+lines[len(lines)-1]
					return strings.Join(lines, "\n") + "\n"
				}
				return withService(t, map[string]any{"skipValidation": false,
					"trustedCA":   string(ca.CertPEM()) + comment(ca.CertPEM()),
					"certificate": map[string]any{"key": string(kp.KeyPEM), "crt": comment(kp.CertPEM)},
				})
			},
			errors: []want{
				{cfgAt + ".trustedCA", `commented out with '#': line `},
				{cfgAt + ".certificate.crt", `commented out with '#': line 1 of the value`},
			},
		},
		{
			name: "rsa 2048 key accepted",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", clientCert(ca.RSA("client", 2048))))
			},
		},
		{
			name: "expired client certificate",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", clientCert(ca.Expired("client"))))
			},
			errors: []want{{cfgAt + ".certificate.crt", `the client certificate ("CN=client") expired at `}},
		},
		{
			name: "not yet valid client certificate",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", clientCert(ca.NotYetValid("client"))))
			},
			errors: []want{{cfgAt + ".certificate.crt", "is not valid until "}},
		},
		{
			name: "key does not match certificate",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				a, b := ca.Client("a"), ca.Client("b")
				return withService(t, with(verified(ca), "certificate", map[string]any{"key": string(b.KeyPEM), "crt": string(a.CertPEM)}))
			},
			errors: []want{{cfgAt + ".certificate.key", `certificate.key does not match the certificate "CN=a"`}},
		},
		{
			name: "cn-only client certificate accepted",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", clientCert(ca.CNOnly("legacy-client"))))
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if c := objs[1].Binding.Outbound.Certificate; c == nil || c.Leaf.Subject.CommonName != "legacy-client" {
					t.Errorf("certificate = %+v, want the CN-only leaf", c)
				}
			},
		},
		{
			name: "client certificate for server auth only",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", clientCert(serverOnly(t, ca))))
			},
			errors: []want{{cfgAt + ".certificate.crt", "lacks clientAuth"}},
		},
		{
			name: "chain with intermediate in order",
			build: func(t *testing.T) []*policyv1.Resource {
				root := testca.New(t, "root")
				inter := root.Intermediate("issuing")
				kp := inter.Client("client")
				crt := string(kp.CertPEM) + string(inter.CertPEM())
				return withService(t, with(verified(root), "certificate", map[string]any{"key": string(kp.KeyPEM), "crt": crt}))
			},
			check: func(t *testing.T, objs []model.Object, rep model.Report) {
				if n := len(objs[1].Binding.Outbound.Certificate.Certificate); n != 2 {
					t.Errorf("chain has %d certificates, want 2", n)
				}
				if n := len(rep.Certificates); n != 3 {
					t.Errorf("report has %d certificates, want 3 (CA, leaf, intermediate)", n)
				}
			},
		},
		{
			name: "chain out of order",
			build: func(t *testing.T) []*policyv1.Resource {
				root := testca.New(t, "root")
				inter := root.Intermediate("issuing")
				kp := inter.Client("client")
				crt := string(inter.CertPEM()) + string(kp.CertPEM)
				return withService(t, with(verified(root), "certificate", map[string]any{"key": string(kp.KeyPEM), "crt": crt}))
			},
			errors: []want{
				{cfgAt + ".certificate.key", `does not match the certificate "CN=issuing"`},
				{cfgAt + ".certificate.crt", "crt holds the leaf first"},
			},
		},
		{
			name: "key without crt",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", map[string]any{"key": string(ca.Client("c").KeyPEM)}))
			},
			errors: []want{{cfgAt + ".certificate.crt", "certificate.crt is missing: key and crt come together"}},
		},
		{
			name: "bad pem in key",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Client("c")
				return withService(t, with(verified(ca), "certificate", map[string]any{"key": "not a key", "crt": string(kp.CertPEM)}))
			},
			errors: []want{{cfgAt + ".certificate.key", "certificate.key is not PEM: expected -----BEGIN PRIVATE KEY-----"}},
		},
		{
			name: "encrypted key",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Client("c")
				encrypted := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("opaque")})
				return withService(t, with(verified(ca), "certificate", map[string]any{"key": string(encrypted), "crt": string(kp.CertPEM)}))
			},
			errors: []want{{cfgAt + ".certificate.key", "`openssl pkey -in key.pem -out key-plain.pem`"}},
		},
		{
			name: "certificate pasted as key",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				kp := ca.Client("c")
				return withService(t, with(verified(ca), "certificate", map[string]any{"key": string(kp.CertPEM), "crt": string(kp.CertPEM)}))
			},
			errors: []want{{cfgAt + ".certificate.key", "holds a certificate where the private key belongs"}},
		},

		// Trusted CAs.
		{
			name: "bad pem in trustedCA",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, map[string]any{"skipValidation": false, "trustedCA": "MIIB...base64 without armour"})
			},
			errors: []want{{cfgAt + ".trustedCA", "trustedCA is not PEM: expected one or more -----BEGIN CERTIFICATE----- blocks"}},
		},
		{
			name: "trustedCA with line breaks lost",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				flat := strings.ReplaceAll(string(ca.CertPEM()), "\n", " ")
				return withService(t, map[string]any{"skipValidation": false, "trustedCA": flat})
			},
			errors: []want{{cfgAt + ".trustedCA", "block scalar (field: |)"}},
		},
		{
			name: "expired trusted CA",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				old := ca.Issue(testca.Options{CommonName: "old-ca", IsCA: true, NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
				return withService(t, map[string]any{"skipValidation": false, "trustedCA": string(old.CertPEM)})
			},
			errors: []want{{cfgAt + ".trustedCA", `trustedCA certificate 1 ("CN=old-ca") expired at`}},
		},
		{
			name: "leaf in trustedCA warns",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, map[string]any{"skipValidation": false, "trustedCA": string(ca.Server("orders.internal").CertPEM)})
			},
			warnings: []want{{cfgAt + ".trustedCA", "is not a CA certificate, so it only matches an upstream presenting exactly this certificate"}},
		},

		// skipValidation.
		{
			name: "skipValidation false without trustedCA",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, map[string]any{"skipValidation": false})
			},
			errors: []want{{cfgAt + ".trustedCA", "trustedCA is required when skipValidation is false"}},
		},
		{
			name: "skipValidation missing",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, map[string]any{"trustedCA": string(ca.CertPEM())})
			},
			errors: []want{{cfgAt + ".skipValidation", "skipValidation is required: set skipValidation: false"}},
		},
		{
			name: "skipValidation true warns",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, map[string]any{"skipValidation": true})
			},
			warnings: []want{{cfgAt + ".skipValidation", "upstream certificates will not be verified"}},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if o := objs[1].Binding.Outbound; !o.SkipValidation || o.TrustedCAs != nil {
					t.Errorf("outbound = %+v, want SkipValidation and no CAs", o)
				}
			},
		},
		{
			name: "skipValidation true with trustedCA warns it is ignored",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "skipValidation", true))
			},
			warnings: []want{{cfgAt + ".trustedCA", "trustedCA is ignored because skipValidation is true"}},
		},
		{
			name: "legacyCommonName opts in with a warning and changes the fingerprint",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "legacyCommonName", true))
			},
			warnings: []want{{cfgAt + ".legacyCommonName", "matched by its Common Name"}},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				o := objs[1].Binding.Outbound
				if !o.LegacyCommonName {
					t.Fatalf("outbound = %+v, want LegacyCommonName", o)
				}
				plain := *o
				plain.LegacyCommonName = false
				if model.OutboundFingerprint(&plain) == o.Fingerprint {
					t.Error("the fingerprint does not change with legacyCommonName: pools with and without it would be shared")
				}
			},
		},
		{
			name: "legacyCommonName with skipValidation is ignored, with a warning",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, map[string]any{"skipValidation": true, "legacyCommonName": true})
			},
			warnings: []want{{cfgAt + ".legacyCommonName", "legacyCommonName is ignored because skipValidation is true"}},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if objs[1].Binding.Outbound.LegacyCommonName {
					t.Error("LegacyCommonName set with skipValidation")
				}
			},
		},
		{
			name: "skipValidation as a string",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "skipValidation", "false"))
			},
			errors: []want{{cfgAt + ".skipValidation", `skipValidation must be a boolean (true or false), got a string ("false"); write false without quotes`}},
		},

		// Versions.
		{
			name: "min above max",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "minversion", "1.3", "maxversion", "1.2"))
			},
			errors: []want{{cfgAt + ".minversion", "minversion 1.3 is above maxversion 1.2"}},
		},
		{
			name: "unknown version 1.0",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "minversion", "1.0"))
			},
			errors: []want{{cfgAt + ".minversion", `minversion "1.0" is not a TLS version this gateway supports; use "1.1", "1.2" or "1.3"`}},
		},
		{
			name: "version 2 as a number",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "maxversion", 2.0))
			},
			errors: []want{{cfgAt + ".maxversion", `maxversion "2" is not a TLS version`}},
		},
		{
			name: "numeric and TLSv spellings accepted",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "minversion", 1.2, "maxversion", "TLSv1.3"))
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				o := objs[1].Binding.Outbound
				if o.MinVersion != tls.VersionTLS12 || o.MaxVersion != tls.VersionTLS13 {
					t.Errorf("versions = %x..%x, want 1.2..1.3", o.MinVersion, o.MaxVersion)
				}
			},
		},

		// Ciphers.
		{
			name: "tls 1.1 with no ciphers",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "minversion", "1.1"))
			},
			errors: []want{{cfgAt + ".minversion", "TLS 1.1 has no default cipher suites: with minversion 1.1, list ciphers"}},
		},
		{
			name: "tls 1.1 with only tls 1.2 suites warns",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "minversion", "1.1", "ciphers",
					list("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")))
			},
			warnings: []want{{cfgAt + ".ciphers", "TLS 1.1 cannot be negotiated"}},
		},
		{
			name: "tls 1.1 with a cbc suite",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "minversion", "1.1", "ciphers",
					list("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")))
			},
			warnings: []want{{cfgAt + ".ciphers[1]", "is weak (CBC mode)"}},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				o := objs[1].Binding.Outbound
				want := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}
				if !slices.Equal(o.CipherSuites, want) || o.MinVersion != tls.VersionTLS11 {
					t.Errorf("suites = %x, min %x; want %x, 1.1", o.CipherSuites, o.MinVersion, want)
				}
			},
		},
		{
			name: "tls 1.3 suites listed warn",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "ciphers", list("TLS_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")))
			},
			warnings: []want{{cfgAt + ".ciphers[0]", "TLS 1.3 suites cannot be chosen"}},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if got := objs[1].Binding.Outbound.CipherSuites; !slices.Equal(got, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}) {
					t.Errorf("suites = %x, want only the TLS 1.2 one", got)
				}
			},
		},
		{
			name: "tls 1.3 suite with tls 1.3 off",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "maxversion", "1.2", "ciphers", list("TLS_AES_256_GCM_SHA384")))
			},
			errors: []want{{cfgAt + ".ciphers[0]", "is a TLS 1.3 suite, but maxversion is 1.2"}},
		},
		{
			name: "unknown cipher",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "ciphers", list("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_FOO")))
			},
			errors: []want{{cfgAt + ".ciphers[2]", `"TLS_FOO" is not an IANA cipher suite that this gateway supports; supported: TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, `}},
		},
		{
			name: "openssl cipher name",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "ciphers", list("ECDHE-RSA-AES128-GCM-SHA256")))
			},
			errors: []want{{cfgAt + ".ciphers[0]", `is an OpenSSL name; write the IANA name "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"`}},
		},
		{
			name: "psk cipher",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "ciphers", list("TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256")))
			},
			errors: []want{{cfgAt + ".ciphers[0]", "PSK suites are not supported by this gateway's TLS stack"}},
		},
		{
			name: "dhe cipher",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "ciphers", list("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256")))
			},
			errors: []want{{cfgAt + ".ciphers[0]", "is an IANA suite but not supported by Go's crypto/tls"}},
		},
		{
			name: "weak cipher warns",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "ciphers", list("TLS_RSA_WITH_AES_128_GCM_SHA256")))
			},
			warnings: []want{{cfgAt + ".ciphers[0]", "is weak (Go lists it as insecure; RSA key exchange has no forward secrecy)"}},
		},
		{
			name: "gcm suite with max 1.1",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "minversion", "1.1", "maxversion", "1.1", "ciphers",
					list("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA")))
			},
			errors: []want{{cfgAt + ".ciphers[0]", `"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" works only with TLS 1.2, which is not enabled (minversion 1.1, maxversion 1.1)`}},
		},
		{
			name: "duplicate cipher",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "ciphers", list("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")))
			},
			errors: []want{{cfgAt + ".ciphers[1]", "is listed twice (also ciphers[0])"}},
		},

		// Bounds: the path of a value too long, in a list, a list in a
		// list, and a config object.
		{
			name: "config list element too long",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "subjectAltNames", list("orders.internal", strings.Repeat("x", limits.URIBytes+1))))
			},
			errors: []want{{cfgAt + ".subjectAltNames[1]", "shorten it"}},
		},
		{
			name: "config element of a list in a list too long",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "alpn", []any{"h2", list("http/1.1", strings.Repeat("x", limits.ALPNBytes+1))}))
			},
			errors: []want{{cfgAt + ".alpn[1][1]", "shorten it"}},
		},
		{
			name: "config object member too long",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "certificate", map[string]any{"crt": "x", "key": strings.Repeat("x", limits.KeyPEMBytes+1)}))
			},
			errors: []want{{cfgAt + ".certificate.key", "shorten it"}},
		},
		{
			name: "service endpoint too long",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{serviceSpec("orders", &policyv1.ServiceSpec{Endpoints: []string{"orders.internal:8443", strings.Repeat("x", limits.AddressBytes+1)}})}
			},
			errors: []want{{"resources[0].service.spec.endpoints[1]", "shorten it"}},
		},

		// ALPN, SNI, SANs, config keys.
		{
			name: "bad alpn value",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "alpn", list("http/1.1", "http2")))
			},
			errors: []want{{cfgAt + ".alpn[1]", `"http2" is not an ALPN protocol this gateway speaks to upstreams; use "h2" and/or "http/1.1", in order of preference: did you mean "h2"?`}},
		},
		{
			name: "alpn order kept, sni and sans read",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "alpn", list("http/1.1", "h2"), "sni", "Orders.Internal", "subjectAltNames", list("orders.internal", "*.orders.internal")))
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				o := objs[1].Binding.Outbound
				if !slices.Equal(o.ALPN, []string{"http/1.1", "h2"}) || o.SNI != "orders.internal" || len(o.SubjectAltNames) != 2 {
					t.Errorf("outbound = alpn %v sni %q sans %v", o.ALPN, o.SNI, o.SubjectAltNames)
				}
				// Given explicitly, the list is offered whatever the Service speaks.
				if got := o.OfferedALPN(model.ProtocolHTTP1); !slices.Equal(got, []string{"http/1.1", "h2"}) {
					t.Errorf("OfferedALPN(http1) = %v, want the list given", got)
				}
			},
		},
		{
			name: "bad sni and san",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, with(verified(ca), "sni", "https://orders", "subjectAltNames", list("orders internal")))
			},
			errors: []want{
				{cfgAt + ".sni", "is neither a DNS name nor an IP address"},
				{cfgAt + ".subjectAltNames[0]", "is not a DNS name"},
			},
		},
		{
			name: "unknown config keys suggest the right spelling",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				return withService(t, map[string]any{"skip_validation": false, "trustedCa": string(ca.CertPEM()), "minVersion": "1.2", "colour": "blue"})
			},
			errors: []want{
				{cfgAt + ".minVersion", `unknown field "minVersion"; did you mean "minversion"?`},
				{cfgAt + ".trustedCa", `did you mean "trustedCA"?`},
				{cfgAt + ".skip_validation", `did you mean "skipValidation"?`},
				{cfgAt + ".colour", `unknown field "colour" in tls-outbound config; remove it`},
				{cfgAt + ".skipValidation", "skipValidation is required"},
			},
		},
		{
			name: "config missing",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, nil)
			},
			errors: []want{{cfgAt, "config is required for tls-outbound"}},
		},

		// Binding references.
		{
			name: "binding to a service in the same request",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, verified(testca.New(t, "ca")))
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				b := objs[1].Binding
				if b.Target != (model.Ref{Kind: model.KindService, Name: "orders"}) || b.Outbound == nil || b.Outbound.Fingerprint == "" {
					t.Errorf("binding = %+v", b)
				}
			},
		},
		{
			name: "binding to a stored service",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{binding(t, "orders-mtls", "orders", verified(testca.New(t, "ca")))}
			},
			stored: &fakeCatalog{refs: []model.Ref{{Kind: model.KindService, Name: "orders"}}},
		},
		{
			name: "binding to a service that does not exist",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{binding(t, "orders-mtls", "orders", verified(testca.New(t, "ca")))}
			},
			errors: []want{{"resources[0].policyBinding.spec.targetRef.name", `Service "orders" does not exist; apply it first or in the same request`}},
		},
		{
			name: "second tls-outbound binding for a service",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, verified(testca.New(t, "ca")))
			},
			stored: &fakeCatalog{bindings: []model.Binding{{Name: "old-mtls", Target: model.Ref{Kind: model.KindService, Name: "orders"}, Policy: model.PolicyTLSOutbound}}},
			errors: []want{{specAt + ".targetRef.name", `Service "orders" already has tls-outbound binding "old-mtls" (stored)`}},
		},
		{
			name: "binding replacing itself",
			build: func(t *testing.T) []*policyv1.Resource {
				return withService(t, verified(testca.New(t, "ca")))
			},
			stored: &fakeCatalog{bindings: []model.Binding{{Name: "orders-mtls", Target: model.Ref{Kind: model.KindService, Name: "orders"}, Policy: model.PolicyTLSOutbound}}},
		},
		{
			name: "target kind and policy not supported",
			build: func(t *testing.T) []*policyv1.Resource {
				res := withService(t, verified(testca.New(t, "ca")))
				spec := res[1].GetPolicyBinding().GetSpec()
				spec.TargetRef.Kind = "ApiInstance"
				spec.PolicyRef.Name = "tls-outbund"
				return res
			},
			errors: []want{
				{specAt + ".targetRef.kind", `targetRef.kind "ApiInstance" does not take tls-outbund bindings; tls-outbund attaches to a Service: set kind: Service`},
				{specAt + ".policyRef.name", `policy "tls-outbund" is not supported; supported policies: "tls-outbound", "tls-inbound", "tls": did you mean "tls-outbound"?`},
			},
		},
		{
			name: "valid full flex binding returns certificate expiry",
			build: func(t *testing.T) []*policyv1.Resource {
				ca := testca.New(t, "ca")
				res := withService(t, map[string]any{
					"skipValidation": false,
					"trustedCA":      string(ca.CertPEM()),
					"certificate":    clientCert(ca.Client("gateway")),
					"alpn":           list("h2", "http/1.1"),
					"minversion":     "1.2",
					"maxversion":     "1.3",
					"ciphers":        list("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
				})
				res[1].GetPolicyBinding().ApiVersion = model.FlexAPIVersion
				return res
			},
			check: func(t *testing.T, objs []model.Object, rep model.Report) {
				var leaf *model.CertificateInfo
				for i, ci := range rep.Certificates {
					if ci.Field == cfgAt+".certificate.crt" {
						leaf = &rep.Certificates[i]
					}
				}
				if leaf == nil || leaf.Cert.Subject.CommonName != "gateway" || !leaf.NotAfter.Equal(leaf.Cert.NotAfter) || leaf.NotAfter.Before(time.Now()) || len(leaf.Fingerprint) != 64 {
					t.Fatalf("certificates = %+v, want the client leaf with its expiry", rep.Certificates)
				}
				if len(rep.Certificates) != 2 {
					t.Errorf("report has %d certificates, want 2 (CA and leaf)", len(rep.Certificates))
				}
				o := objs[1].Binding.Outbound
				if o.Certificate == nil || o.Certificate.Leaf == nil || o.Certificate.PrivateKey == nil || len(o.TrustedCAs) != 1 || len(o.CipherSuites) != 2 {
					t.Errorf("outbound = %+v", o)
				}
				if len(rep.Warnings) != 0 {
					t.Errorf("warnings:%s", dump(rep.Warnings))
				}
			},
		},

		// Resource headers.
		{
			name: "service name with uppercase",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("Orders", "orders.internal:443")}
			},
			errors: []want{{"resources[0].service.metadata.name", `name "Orders" has uppercase letters; names are lowercase letters, digits and hyphens, at most 64 characters, start with a letter and do not end with a hyphen: try "orders"`}},
		},
		{
			name: "service name of 65 characters",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("a"+strings.Repeat("b", 64), "orders.internal:443")}
			},
			errors: []want{{"resources[0].service.metadata.name", "is 65 characters long"}},
		},
		{
			name: "service name with underscore",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders_api", "orders.internal:443")}
			},
			errors: []want{{"resources[0].service.metadata.name", `has characters other than letters, digits and hyphens; names are lowercase letters, digits and hyphens, at most 64 characters, start with a letter and do not end with a hyphen: try "orders-api"`}},
		},
		{
			name: "service name starting with a digit and ending with a hyphen",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("1orders-", "orders.internal:443")}
			},
			errors: []want{{"resources[0].service.metadata.name", `does not start with a letter and ends with a hyphen; names are`}},
		},
		{
			name: "wrong kind and apiVersion",
			build: func(t *testing.T) []*policyv1.Resource {
				res := service("orders", "orders.internal:443")
				res.GetService().Kind = "Route"
				res.GetService().ApiVersion = model.FlexAPIVersion
				return []*policyv1.Resource{res}
			},
			errors: []want{
				{"resources[0].service.kind", `kind "Route" does not match the resource, which is under "service"; set kind: Service`},
				{"resources[0].service.apiVersion", `apiVersion "gateway.mulesoft.com/v1alpha1" is not supported; set apiVersion: "keyway.dev/v1alpha1"`},
			},
		},
		{
			name: "duplicate kind and name",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "a.internal:443"), service("orders", "b.internal:443")}
			},
			errors: []want{{"resources[1].service.metadata.name", `Service "orders" is also at resources[0]`}},
		},
		{
			name: "empty resource",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{{}}
			},
			errors: []want{{"resources[0]", "set exactly one of service, route, policyBinding or listener"}},
		},

		// Services.
		{
			name: "address without port",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "orders.internal")}
			},
			errors: []want{{"resources[0].service.spec.address", `endpoint "orders.internal" has no port; write host:port, e.g. "orders.internal:443"`}},
		},
		{
			name: "port 0",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "orders.internal:0")}
			},
			errors: []want{{"resources[0].service.spec.address", `port "0" is not a number from 1 to 65535`}},
		},
		{
			name: "port 70000 among endpoints",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{serviceSpec("orders", &policyv1.ServiceSpec{Endpoints: []string{"[2001:db8::1]:8443", "10.0.0.2:70000"}})}
			},
			errors: []want{{"resources[0].service.spec.endpoints[1]", `port "70000" is not a number from 1 to 65535`}},
		},
		{
			name: "ipv6 without brackets",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "2001:db8::1:8443")}
			},
			errors: []want{{"resources[0].service.spec.address", "an IPv6 address goes in brackets"}},
		},
		{
			name: "both address and endpoints",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{serviceSpec("orders", &policyv1.ServiceSpec{Address: "a.internal:443", Endpoints: []string{"b.internal:443"}})}
			},
			errors: []want{{"resources[0].service.spec", "address and endpoints are both set; give one"}},
		},
		{
			name: "https address: TLS verified against the system roots without a binding",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "https://orders.internal:443")}
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				svc := objs[0].Service
				if len(svc.Endpoints) != 1 || svc.Endpoints[0] != "orders.internal:443" {
					t.Errorf("endpoints = %q, want [orders.internal:443]", svc.Endpoints)
				}
				d := svc.DefaultTLS
				if d == nil || !d.SystemRoots || d.SkipValidation || len(d.TrustedCAs) != 0 || d.Fingerprint == "" {
					t.Fatalf("DefaultTLS = %+v, want system roots, verified, with a fingerprint", d)
				}
				if d.MinVersion != tls.VersionTLS12 || d.MaxVersion != tls.VersionTLS13 || !slices.Equal(d.ALPN, []string{"h2", "http/1.1"}) {
					t.Errorf("DefaultTLS versions %x-%x ALPN %q, want a binding's defaults", d.MinVersion, d.MaxVersion, d.ALPN)
				}
			},
		},
		{
			name: "http address and bare host:port are plain HTTP",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("a", "http://a.internal:8080"), service("b", "b.internal:8080"),
					serviceSpec("c", &policyv1.ServiceSpec{Endpoints: []string{"https://c1.internal:443", "HTTPS://c2.internal:443"}})}
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if objs[0].Service.DefaultTLS != nil || objs[1].Service.DefaultTLS != nil {
					t.Error("a plain HTTP Service has a default TLS context")
				}
				if objs[0].Service.Endpoints[0] != "a.internal:8080" {
					t.Errorf("endpoint %q, want a.internal:8080", objs[0].Service.Endpoints[0])
				}
				if objs[2].Service.DefaultTLS == nil || !slices.Equal(objs[2].Service.Endpoints, []string{"c1.internal:443", "c2.internal:443"}) {
					t.Errorf("https endpoints: %q, TLS %v", objs[2].Service.Endpoints, objs[2].Service.DefaultTLS)
				}
			},
		},
		{
			name: "address schemes Keyway does not take",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("a", "ftp://a.internal:21"), service("b", "https://b.internal"),
					service("c", "https://c.internal:443/api"),
					serviceSpec("d", &policyv1.ServiceSpec{Endpoints: []string{"https://d1.internal:443", "d2.internal:443"}})}
			},
			errors: []want{
				{"resources[0].service.spec.address", `scheme "ftp" is not supported; write https://host:port`},
				{"resources[1].service.spec.address", `has no port; write https://b.internal:443`},
				{"resources[2].service.spec.address", `has a path, query or user; a Service is https://host:port only`},
				{"resources[3].service.spec.endpoints[1]", `disagree on TLS: give every endpoint https://, or none`},
			},
		},
		{
			name: "bad protocol",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{serviceSpec("orders", &policyv1.ServiceSpec{Address: "a.internal:443", Protocol: "http2"})}
			},
			errors: []want{{"resources[0].service.spec.protocol", `protocol "http2" is not supported; use "http1" (default), "h2" or "grpc": did you mean "h2"?`}},
		},

		// Routes.
		{
			name: "route path without leading slash",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "orders.internal:443"), route("orders", "orders/{id}", "orders")}
			},
			errors: []want{{"resources[1].route.spec.path", `path "orders/{id}" does not start with "/"; write "/orders/{id}"`}},
		},
		{
			name: "route path not a valid template",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{service("orders", "orders.internal:443"), route("orders", "/orders/{id", "orders")}
			},
			errors: []want{{"resources[1].route.spec.path", `path "/orders/{id" is not a valid route template: at offset`}},
		},
		{
			name: "route to a missing service",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{route("billing", "/billing/", "billing")}
			},
			errors: []want{{"resources[0].route.spec.service", `Service "billing" does not exist; apply it first or in the same request`}},
		},
		{
			name: "route methods normalised, host checked",
			build: func(t *testing.T) []*policyv1.Resource {
				r := route("orders", "/orders/{id}", "orders", "get", "Post")
				r.GetRoute().Spec.Host = "api.example.com"
				return []*policyv1.Resource{service("orders", "orders.internal:443"), r}
			},
			check: func(t *testing.T, objs []model.Object, _ model.Report) {
				if r := objs[1].Route; !slices.Equal(r.Methods, []string{"GET", "POST"}) || r.Host != "api.example.com" {
					t.Errorf("route = %+v", r)
				}
			},
		},
		{
			name: "route bad method and host",
			build: func(t *testing.T) []*policyv1.Resource {
				r := route("orders", "/orders", "orders", "FETCH")
				r.GetRoute().Spec.Host = "API.example.com:8443"
				return []*policyv1.Resource{service("orders", "orders.internal:443"), r}
			},
			errors: []want{
				{"resources[1].route.spec.methods[0]", `"FETCH" is not an HTTP method`},
				{"resources[1].route.spec.host", `host "API.example.com:8443" has a port`},
			},
		},
		{
			name: "conflicting routes in one request",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{
					service("orders", "orders.internal:443"),
					route("by-id", "/orders/{id}", "orders", "GET"),
					route("latest", "/{kind}/latest", "orders", "GET"),
				}
			},
			errors: []want{{"resources[2].route.spec.path", `route "latest" pattern "GET /{kind}/latest" conflicts with "GET /orders/{id}" of route "by-id" (in this request)`}},
		},
		{
			name: "route conflicting with a stored route",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{route("orders-copy", "/orders/", "orders")}
			},
			stored: &fakeCatalog{
				refs:   []model.Ref{{Kind: model.KindService, Name: "orders"}},
				routes: []model.Route{{Name: "orders", Path: "/orders/", Service: "orders"}},
			},
			errors: []want{{"resources[0].route.spec.path", `is the same as route "orders" (already stored)`}},
		},
		{
			name: "route replacing its stored version",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{route("orders", "/orders/", "orders", "GET")}
			},
			stored: &fakeCatalog{
				refs:   []model.Ref{{Kind: model.KindService, Name: "orders"}},
				routes: []model.Route{{Name: "orders", Path: "/orders/", Service: "orders"}},
			},
		},

		// Everything at once.
		{
			name: "several problems at once all reported",
			build: func(t *testing.T) []*policyv1.Resource {
				return []*policyv1.Resource{
					service("Orders_API", "orders.internal"),
					route("orders", "/orders/{id}", "missing"),
					binding(t, "orders-mtls", "nowhere", map[string]any{"minVersion": "1.2", "ciphers": list("TLS_FOO")}),
				}
			},
			errors: []want{
				{"resources[0].service.metadata.name", `try "orders-api"`},
				{"resources[0].service.spec.address", "has no port"},
				{"resources[1].route.spec.service", `Service "missing" does not exist`},
				{"resources[2].policyBinding.spec.config.minVersion", `did you mean "minversion"?`},
				{"resources[2].policyBinding.spec.config.skipValidation", "skipValidation is required"},
				{"resources[2].policyBinding.spec.config.ciphers[0]", `"TLS_FOO" is not an IANA cipher suite`},
				{"resources[2].policyBinding.spec.targetRef.name", `Service "nowhere" does not exist`},
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
			if tc.check != nil {
				if !rep.OK() {
					t.Fatalf("errors:%s", dump(rep.Errors))
				}
				tc.check(t, objs, rep)
			}
		})
	}
}

func TestValidateNilCatalogAndEmptyRequest(t *testing.T) {
	t.Parallel()
	objs, rep := model.Validate(nil, nil, time.Now())
	if len(objs) != 0 || !rep.OK() {
		t.Fatalf("Validate(nil) = %v, %+v", objs, rep)
	}
}

// Labels are validated as Kubernetes validates them at apply, but a
// stored resource is decoded whatever its labels: they were not checked
// before, and nodes do not use them.
func TestLabelsAtApplyNotAtDecode(t *testing.T) {
	t.Parallel()
	res := &policyv1.Resource{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{
		ApiVersion: model.APIVersion, Kind: model.KindService,
		Metadata: &policyv1.ObjectMeta{Name: "orders", Labels: map[string]string{"Team Name": "a b"}},
		Spec:     &policyv1.ServiceSpec{Address: "orders.internal:443"},
	}}}
	_, report := model.Validate([]*policyv1.Resource{res}, nil, time.Now())
	if report.OK() || report.Errors[0].Field != "resources[0].service.metadata.labels" {
		t.Errorf("apply: %v; want an error at resources[0].service.metadata.labels", report.Errors)
	}
	if _, err := model.Decode(res); err != nil {
		t.Errorf("decode: %v", err)
	}
	res.GetService().Spec.Address = strings.Repeat("a", 300) + ":443"
	if _, err := model.Decode(res); err == nil {
		t.Error("decode accepted an address over its maximum")
	}
}
