package certs_test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/fuzzseed"
	"keyway.dev/internal/testca"
)

// TestCommentedPEM finds the first commented-out boundary line, counting
// lines of the value from 1, and only boundary lines.
func TestCommentedPEM(t *testing.T) {
	t.Parallel()
	ca := testca.New(t, "ca")
	good := string(ca.CertPEM())
	for _, tc := range []struct {
		name, data string
		line       int
		text       string
	}{
		{"clean PEM", good, 0, ""},
		{"a plain comment line is text around the block", "# the issuing CA\n" + good, 0, ""},
		{"the guide's sample", "# -----BEGIN CERTIFICATE-----\n# insert certificate\n# -----END CERTIFICATE-----\n", 1, "# -----BEGIN CERTIFICATE-----"},
		{"a second block commented out", good + "  ## -----BEGIN CERTIFICATE-----\nMIIB\n", strings.Count(good, "\n") + 1, "  ## -----BEGIN CERTIFICATE-----"},
		{"only the END line", strings.Replace(good, "-----END", "#-----END", 1), strings.Count(good, "\n"), "#-----END CERTIFICATE-----"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line, text := certs.CommentedPEM(tc.data)
			if line != tc.line || text != tc.text {
				t.Errorf("CommentedPEM = %d %q, want %d %q", line, text, tc.line, tc.text)
			}
		})
	}
}

// FuzzParsePEM feeds the PEM readers of certificate and key fields
// arbitrary text. Properties: bounded time; errors quote no more than a
// prefix of the text (a block type is the input's too); what parses
// survives re-encoding: the certificates' DER, and the key's public half.
func FuzzParsePEM(f *testing.F) {
	ca := testca.New(f, "fuzz CA")
	kp := ca.Client("gateway")
	f.Add(string(ca.CertPEM()))
	f.Add(string(kp.CertPEM) + string(ca.CertPEM()))
	f.Add(string(kp.KeyPEM))
	f.Add("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n" + string(kp.KeyPEM))
	f.Add("subject=CN=x\n" + string(kp.CertPEM) + "trailing text")
	f.Add("-----BEGIN CERTIFICATE-----\nMIIB\n")
	long := fuzzseed.Long(4096)
	f.Add("-----BEGIN " + long + "-----\nAAAA\n-----END " + long + "-----\n")
	f.Add("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")

	f.Fuzz(func(t *testing.T, data string) {
		var (
			parsed   []*x509.Certificate
			certErr  error
			key      any
			keyErr   error
			keyBlock []byte
		)
		fuzzseed.Within(t, func() {
			parsed, certErr = certs.ParsePEMCertificates(data)
			signer, err := certs.ParsePEMKey(data)
			keyErr = err
			if err == nil {
				key = signer.Public()
				der, merr := x509.MarshalPKCS8PrivateKey(signer)
				if merr != nil {
					t.Fatalf("an accepted key does not marshal as PKCS#8: %v", merr)
				}
				keyBlock = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			}
		})
		fuzzseed.CheckError(t, certErr)
		fuzzseed.CheckError(t, keyErr)
		if certErr == nil {
			if len(parsed) == 0 {
				t.Fatal("no error and no certificate")
			}
			var again strings.Builder
			for _, c := range parsed {
				again.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
			}
			back, err := certs.ParsePEMCertificates(again.String())
			if err != nil || len(back) != len(parsed) {
				t.Fatalf("re-encoded certificates do not parse back: %v", err)
			}
			for i := range back {
				if !back[i].Equal(parsed[i]) {
					t.Fatalf("certificate %d changed when re-encoded", i+1)
				}
			}
		}
		if keyErr == nil {
			back, err := certs.ParsePEMKey(string(keyBlock))
			if err != nil {
				t.Fatalf("the key, re-encoded as PKCS#8, does not parse back: %v", err)
			}
			if eq, ok := back.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(key) {
				t.Fatal("the key's public half changed when re-encoded")
			}
		}
	})
}
