package localrun

import (
	"fmt"
	"os"
	"path/filepath"
)

// Operator is an operator's credentials for the run: a client certificate
// from the operator CA (organisational units keyway-operators and
// keyway-secrets-admins, the roles operator, viewer and secrets-admin of
// the shipped AccessPolicy), the CA of the services' certificates, and a
// keywayctl configuration file whose context "keyway-local" names the
// policy and secrets Services' addresses.
type Operator struct {
	Cert, Key, CA string
	// Config is the keywayctl configuration file (KEYWAYCONFIG).
	Config string
	// ClientCA is the operator CA's certificate, which signs Cert.
	ClientCA string
}

const operatorContext = "keyway-local"

func (c *Cluster) writeOperator() (Operator, error) {
	dir := filepath.Join(c.opts.WorkDir, "operator")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Operator{}, err
	}
	kp, err := c.ca.operator.issue(leaf{cn: "operator", ous: []string{operatorOU, secretsAdminOU}, client: true})
	if err != nil {
		return Operator{}, err
	}
	op := Operator{
		Cert:     filepath.Join(dir, "operator.crt"),
		Key:      filepath.Join(dir, "operator.key"),
		CA:       filepath.Join(dir, "ca.crt"),
		ClientCA: filepath.Join(dir, "operator-ca.crt"),
		Config:   filepath.Join(dir, "keywayctl.yaml"),
	}
	for path, data := range map[string][]byte{op.Cert: kp.cert, op.Key: kp.key, op.CA: c.ca.internal.pem, op.ClientCA: c.ca.operator.pem} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return Operator{}, err
		}
	}
	return op, nil
}

// writeKeywayctlConfig writes the context once the Services' addresses are
// known.
func (c *Cluster) writeKeywayctlConfig(policy, secrets string) error {
	if policy == "" || secrets == "" {
		return fmt.Errorf("the manifests have no Service keyway-policy port 8081 or keyway-secrets port 8082 for keywayctl")
	}
	conf := fmt.Sprintf("currentContext: %s\ncontexts:\n  - name: %s\n    server: https://%s\n    secretsServer: https://%s\n    ca: %s\n    cert: %s\n    key: %s\n",
		operatorContext, operatorContext, policy, secrets, c.operator.CA, c.operator.Cert, c.operator.Key)
	return os.WriteFile(c.operator.Config, []byte(conf), 0o600)
}
