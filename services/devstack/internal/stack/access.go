package stack

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"keyway.dev/internal/devca"
)

// OperatorID is the SPIFFE ID of the dev stack's operator identity.
const OperatorID = "spiffe://keyway.local/operator"

// Common names the access policy binds roles to.
const (
	operatorCN = "keyway-operator"
	policyCN   = "keyway-policy"
	nodeCN     = "proxy-node"
)

// accessFiles are what the services' access control needs, and the
// operator's identity.
type accessFiles struct {
	// operatorCA issues callers' certificates (the operator identity).
	operatorCA                *devca.CA
	operatorCAFile            string
	operatorCert, operatorKey string
	// apiCAFile is the CA of the services' API certificates (the internal
	// CA, which also signs the secrets service's internal certificate, so
	// that the policy service trusts the secrets API with --secrets-ca).
	apiCAFile string
	// API server certificates.
	policyCert, policyKey         string
	secretsAPICert, secretsAPIKey string
	adminCert, adminKey           string
	// policyClientCert is the policy service's identity towards the
	// secrets service (API and internal port), from the internal CA.
	policyClientCert, policyClientKey string
	// secretsClientCAFile is the secrets API's --client-ca: the operator
	// CA and the internal CA.
	secretsClientCAFile string
	// policyFile is the access policy every service reads.
	policyFile string
}

// accessPolicy gives the operator every role but node, the policy
// service what it needs on the secrets service, and proxy nodes node.
const accessPolicy = `# Who may call Keyway's APIs (docs/reference/access.md). Re-read on SIGHUP.
apiVersion: keyway.dev/v1alpha1
kind: AccessPolicy
metadata: {name: keyway-dev}
spec:
  bindings:
    - role: viewer
      subjects:
        - spiffeID: ` + OperatorID + `
        - cn: ` + policyCN + `            # checks references on the secrets API
    - role: operator
      subjects:
        - spiffeID: ` + OperatorID + `
    - role: secrets-admin
      subjects:
        - spiffeID: ` + OperatorID + `
        - cn: ` + policyCN + `
    - role: node
      subjects:
        - cn: ` + nodeCN + `              # proxy nodes fetch key material
        - cn: ` + policyCN + `            # the live probe fetches it too
`

// makeAccess loads or makes the operator CA and identity, the API
// certificates, the policy service's client certificate, and writes the
// access policy into data when it is not there.
func (p *pki) makeAccess(data string) error {
	a := &p.access
	ca, err := loadOrMakeCA(p.dir, "operator-ca", "Keyway operator CA")
	if err != nil {
		return err
	}
	a.operatorCA, a.operatorCAFile = ca, filepath.Join(p.dir, "operator-ca.crt")
	a.apiCAFile = filepath.Join(p.dir, "api-ca.crt")
	if err := writeFiles(map[string][]byte{a.apiCAFile: p.internalCA.CertPEM()}); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(a.operatorCAFile)
	if err != nil {
		return err
	}
	a.secretsClientCAFile = filepath.Join(p.dir, "secrets-client-ca.crt")
	if err := writeFiles(map[string][]byte{a.secretsClientCAFile: append(caPEM, p.internalCA.CertPEM()...)}); err != nil {
		return err
	}
	id, _ := url.Parse(OperatorID)
	loopback := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	type leaf struct {
		ca       *devca.CA
		name     string
		crt, key *string
		opts     devca.Options
	}
	for _, l := range []leaf{
		{ca, "operator", &a.operatorCert, &a.operatorKey, devca.Options{CommonName: operatorCN, URIs: []*url.URL{id}}},
		{p.internalCA, "policy-api", &a.policyCert, &a.policyKey, devca.Options{CommonName: "keyway-policy-api", DNSNames: []string{"localhost", "keyway-policy"}, IPs: loopback}},
		{p.internalCA, "secrets-api", &a.secretsAPICert, &a.secretsAPIKey, devca.Options{CommonName: "keyway-secrets-api", DNSNames: []string{"localhost", "keyway-secrets"}, IPs: loopback}},
		{p.internalCA, "proxy-admin", &a.adminCert, &a.adminKey, devca.Options{CommonName: "keyway-proxy-admin", DNSNames: []string{"localhost", "keyway-proxy"}, IPs: loopback}},
		{p.internalCA, "policy-service", &a.policyClientCert, &a.policyClientKey, devca.Options{CommonName: policyCN}},
	} {
		*l.crt, *l.key = filepath.Join(p.dir, l.name+".crt"), filepath.Join(p.dir, l.name+".key")
		if pair, err := tls.LoadX509KeyPair(*l.crt, *l.key); err == nil && fresh(pair.Leaf, l.ca) {
			continue
		}
		l.opts.NotAfter = time.Now().Add(90 * 24 * time.Hour)
		kp, err := l.ca.Issue(l.opts)
		if err != nil {
			return err
		}
		if err := writeFiles(map[string][]byte{*l.crt: kp.CertPEM, *l.key: kp.KeyPEM}); err != nil {
			return err
		}
	}
	// Written once: edits (a token, a viewer) survive restarts; delete
	// the file to get the default back.
	a.policyFile = filepath.Join(data, "access-policy.yaml")
	if _, err := os.Stat(a.policyFile); err == nil {
		return nil
	}
	if err := os.WriteFile(a.policyFile, []byte(accessPolicy), 0o600); err != nil {
		return fmt.Errorf("writing the access policy: %w", err)
	}
	return nil
}

// serverArgs are the flags of an API served with cert and key to callers
// from clientCA, under the access policy.
func (a *accessFiles) serverArgs(cert, key, clientCA string) []string {
	return []string{"--tls-cert", cert, "--tls-key", key, "--client-ca", clientCA, "--access-policy", a.policyFile}
}

// operatorArgs are keywayctl's flags for the operator identity.
func (a *accessFiles) operatorArgs() []string {
	return []string{"--ca", a.apiCAFile, "--cert", a.operatorCert, "--key", a.operatorKey}
}

// operatorTLS is an https client config with the operator identity,
// trusting the API CA.
func (a *accessFiles) operatorTLS(apiCA *x509.CertPool) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(a.operatorCert, a.operatorKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: apiCA, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}
