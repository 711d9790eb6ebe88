package localrun

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// The Secret the secrets service's AppRole credentials live in, with the
// keys the manifest reads. The launcher fills it from Vault once Vault is
// set up, as an operator does with `vault read …/role-id`.
const (
	appRoleSecret      = "keyway-secrets-vault-approle"
	appRoleName        = "keyway-secrets"
	spiffeTrustDomain  = "spiffe://keyway.cluster.local"
	operatorOU         = "keyway-operators"
	secretsAdminOU     = "keyway-secrets-admins"
	natsUsersSecret    = "keyway-nats-users" //nolint:gosec // a Secret's name, not a credential
	clientCAsSecret    = "keyway-client-cas"
	defaultPasswordLen = 24
)

// makeSecrets makes the Secrets of deploy/README.md's table from the
// launcher's CAs: the same names and keys an operator creates, so that the
// manifests mount them unchanged.
func makeSecrets(a *authorities) (map[string]map[string][]byte, error) {
	type server struct {
		secret string
		ca     *ca
		dns    []string
		withCA bool
	}
	out := map[string]map[string][]byte{
		clientCAsSecret: {"ca.crt": append(append([]byte{}, a.operator.pem...), a.internal.pem...)},
	}
	for _, s := range []server{
		{"keyway-policy-api-tls", a.internal, []string{"keyway-policy"}, false},
		{"keyway-secrets-api-tls", a.internal, []string{"keyway-secrets"}, false},
		{"keyway-secrets-internal-tls", a.internal, []string{"keyway-secrets-internal"}, true},
		{"keyway-proxy-admin-tls", a.internal, []string{"keyway-proxy"}, false},
		{"keyway-nats-tls", a.nats, []string{"nats", "*.nats-headless"}, true},
		{"vault-tls", a.vault, []string{"vault", "*.vault-internal", "vault-internal"}, true},
	} {
		// NATS's certificate also authenticates the cluster routes, where a
		// server is the client of another.
		kp, err := s.ca.issue(leaf{cn: s.dns[0], dns: s.dns, server: true, client: s.secret == "keyway-nats-tls"})
		if err != nil {
			return nil, err
		}
		out[s.secret] = map[string][]byte{"tls.crt": kp.cert, "tls.key": kp.key}
		if s.withCA {
			out[s.secret]["ca.crt"] = s.ca.pem
		}
	}
	for _, c := range []struct{ secret, id string }{
		{"keyway-policy-internal-tls", "/policy"},
		{"keyway-proxy-internal-tls", "/node/keyway-proxy"},
	} {
		kp, err := a.internal.issue(leaf{cn: c.id[1:], uris: []string{spiffeTrustDomain + c.id}, client: true})
		if err != nil {
			return nil, err
		}
		// ca.crt: the CA of the secrets service's internal certificate.
		out[c.secret] = map[string][]byte{"tls.crt": kp.cert, "tls.key": kp.key, "ca.crt": a.internal.pem}
	}
	users := map[string][]byte{}
	for _, u := range []string{"policy", "secrets", "node"} {
		users[u] = []byte(password())
	}
	out[natsUsersSecret] = users
	return out, nil
}

func password() string {
	b := make([]byte, defaultPasswordLen/2)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // cannot happen on Linux
	}
	return hex.EncodeToString(b)
}
