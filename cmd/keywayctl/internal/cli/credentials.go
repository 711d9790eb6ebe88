package cli

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"
)

// Environment variables of the credential flags.
const (
	CAEnv        = "KEYWAY_CA"
	CertEnv      = "KEYWAY_CERT"
	KeyEnv       = "KEYWAY_KEY"
	TokenFileEnv = "KEYWAY_TOKEN_FILE" //nolint:gosec // the name of a variable, not a credential
)

// credentials are how keywayctl authenticates to the policy and secrets
// services, and which CA it trusts for their certificates.
type credentials struct {
	// ca is the CA bundle of the services' certificates (PEM); empty: the
	// system's roots.
	ca string
	// cert and key are a client certificate from the operator CA (PEM).
	cert, key string
	// tokenFile holds a bearer token.
	tokenFile string
}

// register defines --ca, --cert, --key and --token-file with defaults from
// the environment; a context of the config file fills in what they leave
// empty (settings.go), and tlsClient builds the TLS client from the result.
func (c *credentials) register(pf *pflag.FlagSet, getenv func(string) string) {
	pf.StringVar(&c.ca, "ca", getenv(CAEnv), "CA certificate(s) of the services' API certificates, PEM (env "+CAEnv+")")
	pf.StringVar(&c.cert, "cert", getenv(CertEnv), "client certificate from the operator CA, PEM (env "+CertEnv+")")
	pf.StringVar(&c.key, "key", getenv(KeyEnv), "key of --cert, PEM (env "+KeyEnv+")")
	pf.StringVar(&c.tokenFile, "token-file", getenv(TokenFileEnv), "file holding a bearer token, sent as \"Authorization: Bearer …\" (env "+TokenFileEnv+")")
}

// authError explains a refusal by a service's access control, or a TLS
// failure, with the fix; it returns nil for other errors. service names
// the service ("the policy service") and server its URL.
func authError(err error, what, service, server string) error {
	var ce *connect.Error
	msg := err.Error()
	switch {
	case connect.CodeOf(err) == connect.CodeUnauthenticated && errors.As(err, &ce):
		return fmt.Errorf("%s: %s at %s does not know who you are: %s\n(give --cert and --key, a certificate from the operator CA, or --token-file; env %s, %s, %s; or a context: keywayctl config set-context; `make run` writes one)",
			what, service, server, ce.Message(), CertEnv, KeyEnv, TokenFileEnv)
	case connect.CodeOf(err) == connect.CodePermissionDenied && errors.As(err, &ce):
		return fmt.Errorf("%s: permission denied by %s: %s", what, service, ce.Message())
	case errors.As(err, new(x509.UnknownAuthorityError)) || strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Errorf("%s: the certificate of %s at %s is not signed by a CA keywayctl trusts: give --ca (env %s) the CA of the services' API certificates", what, service, server, CAEnv)
	case errors.As(err, new(x509.HostnameError)) || strings.Contains(msg, "certificate is valid for"):
		return fmt.Errorf("%s: the certificate of %s is not valid for %s: %w", what, service, server, err)
	case strings.Contains(msg, "remote error: tls:"):
		return fmt.Errorf("%s: %s at %s refused the client certificate (%s): --cert must be issued by a CA in the service's --client-ca, and be valid now",
			what, service, server, msg[strings.Index(msg, "remote error: tls:")+len("remote error: "):])
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s: %s at %s serves plain HTTP (--insecure-no-auth): use its http:// URL", what, service, server)
	case strings.Contains(msg, "malformed HTTP response") || strings.Contains(msg, "frame too large") || strings.Contains(msg, "HTTP request to an HTTPS server"):
		return fmt.Errorf("%s: %s at %s serves TLS: use its https:// URL", what, service, server)
	}
	return nil
}
