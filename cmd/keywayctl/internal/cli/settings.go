package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"keyway.dev/internal/ctlconfig"
)

// setting is one connection setting: its flag, its environment variable,
// and its flag's usage (docs/reference/keywayctl-config.md has the table).
type setting struct {
	flag, env, usage string
}

// The settings a context may give, named for the ctlconfig field they
// fill. The environment variables are those of the --ca, --cert, --key
// and --token-file flags.
var (
	settingServer        = setting{"server", ServerEnv, ""}
	settingSecretsServer = setting{"secrets-server", SecretsServerEnv, ""}
	settingCA            = setting{"ca", "KEYWAY_CA", "PEM file of the CA certificates that sign the services' API certificates"}
	settingCert          = setting{"cert", "KEYWAY_CERT", "PEM file of keywayctl's client certificate (with --key)"}
	settingKey           = setting{"key", "KEYWAY_KEY", "PEM file of the client certificate's private key"}
	settingTokenFile     = setting{"token-file", "KEYWAY_TOKEN_FILE", "file holding a bearer token"}
)

// Flags of the config file and context.
const (
	contextFlag    = "context"
	configFileFlag = "keywayconfig"
)

// connFlags are the global flags that choose the config file, the context
// and the credentials. Their values are read through the flag sets of the
// running command's ancestors, so that a flag defined elsewhere under the
// same name serves as well.
type connFlags struct {
	// running is the command being run.
	running *cobra.Command
}

// register adds the global flags that are not defined yet.
func (c *connFlags) register(pf *pflag.FlagSet) {
	for _, s := range []setting{settingCA, settingCert, settingKey, settingTokenFile} {
		if pf.Lookup(s.flag) == nil {
			pf.String(s.flag, "", s.usage+" (env "+s.env+")")
		}
	}
	// --server is defined with the other basics; say that a context sets
	// it too, so that its default in --help does not mislead.
	if f := pf.Lookup(settingServer.flag); f != nil && !strings.Contains(f.Usage, "context") {
		f.Usage += "; else the context's server"
	}
	if pf.Lookup(contextFlag) == nil {
		pf.String(contextFlag, "", "context of the keywayctl config to use (default: its currentContext)")
	}
	if pf.Lookup(configFileFlag) == nil {
		pf.String(configFileFlag, "", "keywayctl config file (env "+ctlconfig.Env+"; default ~/.config/keyway/config.yaml)")
	}
}

// given returns the value of a connection flag the command line gave. It
// looks for the persistent flag (root's --cert, secrets' --secrets-server)
// and not at the running command's own flags: `secrets put --cert` is the
// certificate to store, not keywayctl's.
func (c *connFlags) given(name string) (string, bool) {
	for cmd := c.running; cmd != nil; cmd = cmd.Parent() {
		if f := cmd.PersistentFlags().Lookup(name); f != nil {
			if !f.Changed {
				return "", false
			}
			return f.Value.String(), true
		}
	}
	return "", false
}

// connSettings are where and as whom a command connects.
type connSettings struct {
	// File is the config file a context was read from; Context the
	// context's name. Both are empty when no context was used.
	File, Context string

	Server, SecretsServer string
	CA, Cert, Key         string
	Token, TokenFile      string

	// from says where each setting came from ("--ca", "KEYWAY_CA",
	// `context "dev"`), by flag name, for messages.
	from map[string]string
}

// source says where the setting of flag came from, for a message.
func (s connSettings) source(flag string) string {
	if f, ok := s.from[flag]; ok {
		return f
	}
	return "--" + flag
}

// settingsInput is what [resolveSettings] decides from.
type settingsInput struct {
	// flags are the flags the command line gave, by name.
	flags  map[string]string
	getenv func(string) string
}

// settings resolves the running command's connection settings.
func (g *globals) settings() (connSettings, error) {
	in := settingsInput{flags: map[string]string{}, getenv: g.io.Getenv}
	for _, name := range []string{settingServer.flag, settingSecretsServer.flag, settingCA.flag, settingCert.flag, settingKey.flag, settingTokenFile.flag, contextFlag, configFileFlag} {
		if v, ok := g.conn.given(name); ok {
			in.flags[name] = v
		}
	}
	return resolveSettings(in)
}

// configPath is the keywayctl config file: --keywayconfig, else
// $KEYWAYCONFIG, else ~/.config/keyway/config.yaml.
func configPath(flags map[string]string, getenv func(string) string) (string, error) {
	if p, ok := flags[configFileFlag]; ok && p != "" {
		return p, nil
	}
	return ctlconfig.DefaultPath(getenv)
}

// resolveSettings decides each setting by precedence: a flag, then its
// environment variable, then the context (--context, else the file's
// currentContext), then the default. The token and the token file are one
// credential: a token file given by flag or environment replaces the
// context's token as well as its token file.
func resolveSettings(in settingsInput) (connSettings, error) {
	s := connSettings{from: map[string]string{}}
	var x ctlconfig.Context
	name, asked := in.flags[contextFlag]
	asked = asked && name != ""
	path, pathErr := configPath(in.flags, in.getenv)
	switch {
	case pathErr != nil && asked:
		return s, fmt.Errorf("--context %s: %w", name, pathErr)
	case pathErr != nil:
		// No file to read: flags, environment and defaults decide.
	default:
		cfg, err := ctlconfig.Load(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && asked:
			return s, fmt.Errorf("--context %s: there is no keywayctl config at %s; make the context with keywayctl config set-context %s --server URL, or point --keywayconfig or %s at the file",
				name, path, name, ctlconfig.Env)
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return s, err
		default:
			fromFile := !asked
			if fromFile {
				name = cfg.CurrentContext
			}
			if name == "" {
				break
			}
			if x, err = cfg.Context(name); err != nil {
				if fromFile {
					return s, fmt.Errorf("currentContext of %s: %w; or select one with keywayctl config use-context NAME", path, err)
				}
				return s, fmt.Errorf("--context: %w", err)
			}
			x = x.Resolve(filepath.Dir(path))
			s.File, s.Context = path, name
		}
	}
	ctxFrom := fmt.Sprintf("context %q of %s", s.Context, s.File)
	pick := func(st setting, dst *string, fromContext, def string) {
		if v, ok := in.flags[st.flag]; ok {
			*dst, s.from[st.flag] = v, "--"+st.flag
		} else if v := in.getenv(st.env); v != "" {
			*dst, s.from[st.flag] = v, st.env
		} else if fromContext != "" {
			*dst, s.from[st.flag] = fromContext, ctxFrom
		} else {
			*dst = def
		}
	}
	pick(settingServer, &s.Server, x.Server, DefaultServer)
	pick(settingSecretsServer, &s.SecretsServer, x.SecretsServer, DefaultSecretsServer)
	pick(settingCA, &s.CA, x.CA, "")
	pick(settingCert, &s.Cert, x.Cert, "")
	pick(settingKey, &s.Key, x.Key, "")
	pick(settingTokenFile, &s.TokenFile, x.TokenFile, "")
	// A context holds a token or a token file, not both; so a token file
	// beside the context's token came from a flag or the environment,
	// and replaces it.
	if x.Token != "" && s.TokenFile == "" {
		s.Token, s.from["token"] = x.Token, ctxFrom
	}
	return s, nil
}

// Bounds of the files tlsClient reads.
const (
	maxPEMFile   = 1 << 20
	maxTokenFile = 64 << 10
)

// tlsClient makes what a connection to a service needs from s: the TLS
// configuration (the CA pool from s.CA, else the system's; the client
// certificate from s.Cert and s.Key; ALPN h2 for grpc, which needs
// HTTP/2) and the bearer token (s.Token, or the content of s.TokenFile),
// empty for none. It reads the files once: a command is short-lived.
func tlsClient(s connSettings, protocol string) (*tls.Config, string, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if protocol == "grpc" {
		tc.NextProtos = []string{"h2"}
	}
	if s.CA != "" {
		pem, err := readBounded(s.CA, maxPEMFile)
		if err != nil {
			return nil, "", fmt.Errorf("%s %s: %w", s.source(settingCA.flag), s.CA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("%s %s: no PEM certificate in the file; it should hold the CA certificate of the services' API certificates", s.source(settingCA.flag), s.CA)
		}
		tc.RootCAs = pool
	}
	switch {
	case s.Cert != "" && s.Key != "":
		pair, err := loadKeyPair(s.Cert, s.Key)
		if err != nil {
			return nil, "", fmt.Errorf("client certificate (%s %s, %s %s): %w", s.source(settingCert.flag), s.Cert, s.source(settingKey.flag), s.Key, err)
		}
		// Sent whatever CAs the server says it accepts: a refusal then
		// names the certificate, where staying silent would look like a
		// missing credential.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	case s.Cert != "":
		return nil, "", fmt.Errorf("%s %s has no key: give --key (or %s) too", s.source(settingCert.flag), s.Cert, settingKey.env)
	case s.Key != "":
		return nil, "", fmt.Errorf("%s %s has no certificate: give --cert (or %s) too", s.source(settingKey.flag), s.Key, settingCert.env)
	}
	token := s.Token
	if s.TokenFile != "" {
		b, err := readBounded(s.TokenFile, maxTokenFile)
		if err != nil {
			return nil, "", fmt.Errorf("%s %s: %w", s.source(settingTokenFile.flag), s.TokenFile, err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" || strings.ContainsFunc(token, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return nil, "", fmt.Errorf("%s %s: want one bearer token (printable ASCII, no spaces) in the file", s.source(settingTokenFile.flag), s.TokenFile)
		}
	}
	return tc, token, nil
}

func loadKeyPair(cert, key string) (tls.Certificate, error) {
	certPEM, err := readBounded(cert, maxPEMFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readBounded(key, maxPEMFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// readBounded reads a file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes: is it the right file?", limit)
	}
	return b, nil
}

// bearerToken adds "Authorization: Bearer <token>" to every request.
type bearerToken struct {
	token string
	next  http.RoundTripper
}

func (b bearerToken) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context()) // a RoundTripper must not modify the request
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
