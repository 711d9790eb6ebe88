// Package apigee converts Apigee target servers (targetservers.json, as the
// Apigee management API and the apigee-config-maven-plugin write it) into
// Keyway manifests: one Service per enabled target server, and for each one
// with sSLInfo enabled a tls-outbound PolicyBinding whose certificate and
// trustedCA are references to the keystore, alias and truststore the target
// server names, for the secrets service to hold.
package apigee

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"keyway.dev/common/limits"
)

// TargetServer is one Apigee target server. Booleans and the port are
// accepted as JSON booleans and numbers or as strings, as Apigee's own
// exports write either.
type TargetServer struct {
	Name      string   `json:"name"`
	Host      string   `json:"host"`
	Port      flexible `json:"port"`
	IsEnabled flexible `json:"isEnabled"`
	// Protocol is Apigee X's: HTTP (default), GRPC_TARGET, GRPC.
	Protocol string   `json:"protocol"`
	SSLInfo  *SSLInfo `json:"sSLInfo"`
}

// SSLInfo is a target server's TLS.
type SSLInfo struct {
	Enabled                flexible        `json:"enabled"`
	ClientAuthEnabled      flexible        `json:"clientAuthEnabled"`
	KeyStore               string          `json:"keyStore"`
	KeyAlias               string          `json:"keyAlias"`
	TrustStore             string          `json:"trustStore"`
	IgnoreValidationErrors flexible        `json:"ignoreValidationErrors"`
	Protocols              []string        `json:"protocols"`
	Ciphers                []string        `json:"ciphers"`
	CommonName             json.RawMessage `json:"commonName"`
}

// flexible is a JSON scalar written as a boolean, a number or a string.
type flexible struct {
	raw string
	set bool
}

func (f *flexible) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		f.raw, f.set = s, true
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v.(type) {
	case bool, float64:
		f.raw, f.set = string(b), true
		return nil
	}
	return fmt.Errorf("want a boolean, a number or a string, got %s", limits.Value(string(b)))
}

// boolean reads a flexible as a boolean, def when absent.
func (f flexible) boolean(def bool) (bool, error) {
	if !f.set {
		return def, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(f.raw))
	if err != nil {
		return false, fmt.Errorf("%s is not true or false", limits.Quote(f.raw))
	}
	return b, nil
}

// Result is the converted manifests and what the user should know.
type Result struct {
	// YAML holds the resources, documents separated by ---.
	YAML []byte
	// Notes are decisions made for the user (a server left out, a
	// reference taken by name); each names the target server.
	Notes []string
	// Services and Bindings count the resources made.
	Services, Bindings int
}

// Convert reads a targetservers.json (an array of target servers, or an
// object {"targetServer": [...]}) and converts it; source names the file in
// the header comment. Every problem is reported at once, each naming the
// target server and the field.
func Convert(source string, data []byte) (*Result, error) {
	servers, err := decode(data)
	if err != nil {
		return nil, err
	}
	c := &converter{names: map[string]string{}}
	var docs []any
	for i, ts := range servers {
		docs = append(docs, c.server(i, ts)...)
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("%s: no enabled target server to convert", source)
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# Converted from the Apigee target servers in %s by keywayctl import apigee.\n", source)
	buf.WriteString("# Keystores, aliases and truststores are references: store them in the secrets\n# service (keywayctl secrets put) before applying.\n")
	for i, d := range docs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("writing YAML: %w", err)
		}
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("writing YAML: %w", err)
		}
	}
	return &Result{YAML: buf.Bytes(), Notes: c.notes, Services: c.services, Bindings: c.bindings}, nil
}

func decode(data []byte) ([]TargetServer, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("the file is empty; give Apigee's targetservers.json: [{\"name\": ..., \"host\": ..., \"port\": ...}]")
	}
	var servers []TargetServer
	if trimmed[0] == '{' {
		var wrapped struct {
			TargetServer []TargetServer `json:"targetServer"`
		}
		if err := json.Unmarshal(trimmed, &wrapped); err != nil {
			return nil, fmt.Errorf("reading target servers: %w", err)
		}
		if wrapped.TargetServer == nil {
			return nil, errors.New(`the object has no "targetServer" list; give an array of target servers, or {"targetServer": [...]}`)
		}
		return wrapped.TargetServer, nil
	}
	if err := json.Unmarshal(trimmed, &servers); err != nil {
		return nil, fmt.Errorf("reading target servers (an array of {name, host, port, isEnabled, sSLInfo}): %w", err)
	}
	return servers, nil
}

type converter struct {
	errs               []error
	notes              []string
	names              map[string]string // Keyway name → Apigee name
	services, bindings int
}

// errorf and notef quote values (%q) by a prefix: a target server's
// fields are the file's, of any length.
func (c *converter) errorf(at, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", at, fmt.Sprintf(format, limits.QuoteArgs(format, args)...)))
}

func (c *converter) notef(at, format string, args ...any) {
	c.notes = append(c.notes, at+": "+fmt.Sprintf(format, limits.QuoteArgs(format, args)...))
}

// Keyway manifest shapes, in the order their fields are written.
type meta struct {
	Name string `yaml:"name"`
}

type serviceDoc struct {
	APIVersion string      `yaml:"apiVersion"`
	Kind       string      `yaml:"kind"`
	Metadata   meta        `yaml:"metadata"`
	Spec       serviceSpec `yaml:"spec"`
}

type serviceSpec struct {
	Address  string `yaml:"address"`
	Protocol string `yaml:"protocol,omitempty"`
}

type bindingDoc struct {
	APIVersion string      `yaml:"apiVersion"`
	Kind       string      `yaml:"kind"`
	Metadata   meta        `yaml:"metadata"`
	Spec       bindingSpec `yaml:"spec"`
}

type bindingSpec struct {
	TargetRef targetRef `yaml:"targetRef"`
	PolicyRef policyRef `yaml:"policyRef"`
	Config    tlsConfig `yaml:"config"`
}

type targetRef struct {
	Kind string `yaml:"kind"`
	Name string `yaml:"name"`
}

type policyRef struct {
	Name string `yaml:"name"`
}

type tlsConfig struct {
	SkipValidation  bool            `yaml:"skipValidation"`
	TrustedCA       *truststoreRef  `yaml:"trustedCA,omitempty"`
	Certificate     *certificateRef `yaml:"certificate,omitempty"`
	MinVersion      string          `yaml:"minversion,omitempty"`
	MaxVersion      string          `yaml:"maxversion,omitempty"`
	Ciphers         []string        `yaml:"ciphers,omitempty"`
	SubjectAltNames []string        `yaml:"subjectAltNames,omitempty"`
}

type truststoreRef struct {
	Truststore string `yaml:"truststore"`
}

type certificateRef struct {
	Keystore string `yaml:"keystore"`
	Alias    string `yaml:"alias"`
}

// server converts one target server; i is its index in the file.
func (c *converter) server(i int, ts TargetServer) []any {
	at := fmt.Sprintf("targetServer[%d]", i)
	if ts.Name != "" {
		at = fmt.Sprintf("targetServer[%d] %s", i, limits.Quote(ts.Name))
	}
	before := len(c.errs)
	enabled, err := ts.IsEnabled.boolean(true)
	if err != nil {
		c.errorf(at, "isEnabled %v", err)
	}
	if !enabled {
		c.notef(at, "left out: isEnabled is false")
		return nil
	}
	name := c.name(at, ts.Name)
	if ts.Host == "" {
		c.errorf(at, "host is missing; give the upstream's host name or IP address")
	}
	port := 0
	switch {
	case !ts.Port.set:
		c.errorf(at, "port is missing; give the upstream's port, e.g. 443")
	default:
		p, err := strconv.Atoi(strings.TrimSpace(ts.Port.raw))
		if err != nil || p < 1 || p > 65535 {
			c.errorf(at, "port %q is not a port number (1-65535)", ts.Port.raw)
		}
		port = p
	}
	protocol := ""
	switch strings.ToUpper(ts.Protocol) {
	case "", "HTTP":
	case "GRPC", "GRPC_TARGET":
		protocol = "grpc"
	default:
		c.errorf(at, "protocol %q has no Keyway equivalent; Keyway Services speak http1, h2 or grpc (HTTP and GRPC_TARGET convert)", ts.Protocol)
	}
	binding := c.tls(at, name, ts.SSLInfo)
	if len(c.errs) != before {
		return nil
	}
	c.services++
	docs := []any{serviceDoc{
		APIVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: meta{Name: name},
		Spec: serviceSpec{Address: net.JoinHostPort(ts.Host, strconv.Itoa(port)), Protocol: protocol},
	}}
	if binding != nil {
		c.bindings++
		docs = append(docs, *binding)
	}
	return docs
}

// name turns an Apigee name into a Keyway resource name (lowercase
// letters, digits and hyphens, at most 64, starting with a letter).
func (c *converter) name(at, apigee string) string {
	if apigee == "" {
		c.errorf(at, "name is missing; every target server needs one")
		return ""
	}
	var b strings.Builder
	for _, r := range strings.ToLower(apigee) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 60 { // room for the binding's "-tls"
		name = strings.TrimRight(name[:60], "-")
	}
	if name == "" || name[0] < 'a' || name[0] > 'z' {
		name = "ts-" + name
	}
	if other, taken := c.names[name]; taken {
		c.errorf(at, "becomes the Keyway name %q, as target server %q does; rename one of them", name, other)
		return name
	}
	c.names[name] = apigee
	if name != apigee {
		c.notef(at, "named %q in Keyway (resource names are lowercase letters, digits and hyphens)", name)
	}
	return name
}

// tls converts sSLInfo into a tls-outbound binding, or nil for plain HTTP.
func (c *converter) tls(at, service string, ssl *SSLInfo) *bindingDoc {
	if ssl == nil {
		return nil
	}
	at += " sSLInfo"
	enabled, err := ssl.Enabled.boolean(false)
	if err != nil {
		c.errorf(at, "enabled %v", err)
		return nil
	}
	if !enabled {
		if ssl.KeyStore != "" || ssl.TrustStore != "" {
			c.notef(at, "enabled is false: the upstream is reached over plain HTTP and keyStore/trustStore are ignored")
		}
		return nil
	}
	cfg := tlsConfig{}
	ignore, err := ssl.IgnoreValidationErrors.boolean(false)
	if err != nil {
		c.errorf(at, "ignoreValidationErrors %v", err)
	}
	cfg.SkipValidation = ignore
	switch {
	case ignore:
		c.notef(at, "ignoreValidationErrors is true: skipValidation: true, upstream certificates are not verified (the policy service warns)")
		if ssl.TrustStore != "" {
			c.notef(at, "trustStore %q is left out because certificates are not verified", ssl.TrustStore)
		}
	case ssl.TrustStore == "":
		c.errorf(at, "trustStore is missing and ignoreValidationErrors is false: Apigee then trusts its default CAs, Keyway trusts only what the binding names; add \"trustStore\": \"<truststore>\" (stored in the secrets service with the CAs of the upstream), or set ignoreValidationErrors to true")
	default:
		cfg.TrustedCA = &truststoreRef{Truststore: c.reference(at, "trustStore", ssl.TrustStore)}
	}

	clientAuth, err := ssl.ClientAuthEnabled.boolean(false)
	if err != nil {
		c.errorf(at, "clientAuthEnabled %v", err)
	}
	switch {
	case clientAuth && (ssl.KeyStore == "" || ssl.KeyAlias == ""):
		c.errorf(at, "clientAuthEnabled is true but keyStore or keyAlias is missing; give both: the keystore and the alias of the client key pair")
	case clientAuth:
		cfg.Certificate = &certificateRef{Keystore: c.reference(at, "keyStore", ssl.KeyStore), Alias: ssl.KeyAlias}
	case ssl.KeyStore != "" || ssl.KeyAlias != "":
		c.notef(at, "keyStore/keyAlias are left out because clientAuthEnabled is false (no client certificate is sent)")
	}

	cfg.MinVersion, cfg.MaxVersion = c.protocols(at, ssl.Protocols)
	cfg.Ciphers = ssl.Ciphers
	if san := c.commonName(at, ssl.CommonName); san != "" {
		cfg.SubjectAltNames = []string{san}
	}
	return &bindingDoc{
		APIVersion: "keyway.dev/v1alpha1", Kind: "PolicyBinding", Metadata: meta{Name: service + "-tls"},
		Spec: bindingSpec{
			TargetRef: targetRef{Kind: "Service", Name: service},
			PolicyRef: policyRef{Name: "tls-outbound"},
			Config:    cfg,
		},
	}
}

// reference takes a keystore or truststore name; an Apigee reference
// ("ref://name") is taken by its name, with a note, since Keyway names the
// store directly.
func (c *converter) reference(at, field, value string) string {
	name, isRef := strings.CutPrefix(value, "ref://")
	if isRef {
		c.notef(at, "%s %q is an Apigee reference; Keyway names stores directly, so %q is used as the store's name: store it under that name in the secrets service, or edit the binding to the store the reference points at", field, value, name)
	}
	return name
}

// protocols turns Apigee's protocol list ("TLSv1.2", "1.3") into the range
// from the lowest to the highest.
func (c *converter) protocols(at string, list []string) (string, string) {
	var versions []string
	for _, p := range list {
		v := strings.TrimSpace(p)
		v = strings.TrimPrefix(strings.TrimPrefix(strings.ToUpper(v), "TLS"), "V")
		switch v {
		case "1.1", "1.2", "1.3":
			if !slices.Contains(versions, v) {
				versions = append(versions, v)
			}
		case "1", "1.0":
			c.errorf(at, "protocols: %q (TLS 1.0) is not supported by Keyway; remove it (1.1, 1.2 and 1.3 are)", p)
		default:
			c.errorf(at, "protocols: %q is not a TLS version; write \"TLSv1.2\" or \"1.2\"", p)
		}
	}
	if len(versions) == 0 {
		return "", ""
	}
	slices.Sort(versions)
	lo, hi := versions[0], versions[len(versions)-1]
	if lo == "1.1" && hi == "1.3" && !slices.Contains(versions, "1.2") {
		c.notef(at, "protocols lists 1.1 and 1.3 without 1.2; Keyway enables the whole range 1.1 to 1.3")
	}
	return lo, hi
}

// commonName reads sSLInfo.commonName: {"value": ..., "wildcardMatch": ...}
// or a plain string.
func (c *converter) commonName(at string, raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var value string
	if err := json.Unmarshal(raw, &value); err != nil {
		var obj struct {
			Value         string   `json:"value"`
			WildcardMatch flexible `json:"wildcardMatch"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			c.errorf(at, "commonName is neither a string nor {\"value\", \"wildcardMatch\"}")
			return ""
		}
		value = obj.Value
		if wild, _ := obj.WildcardMatch.boolean(false); wild && !strings.HasPrefix(value, "*.") {
			c.notef(at, "commonName %q with wildcardMatch: Keyway matches a DNS SAN exactly, or a wildcard SAN by \"*.\"; write \"*.domain\" in subjectAltNames to accept any name under it", value)
		}
	}
	if value == "" {
		return ""
	}
	c.notef(at, "commonName %q becomes subjectAltNames: [%s]: Keyway checks the upstream certificate's DNS SANs (Go ignores the CN)", value, value)
	return strings.ToLower(value)
}
