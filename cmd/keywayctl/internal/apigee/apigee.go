// Package apigee converts Apigee target servers (targetservers.json, as the
// Apigee management API, the apigee-config-maven-plugin and the
// configurable-proxy archive write it) into Keyway manifests: one Service
// per enabled target server, and for each one with sSLInfo enabled a
// tls-outbound PolicyBinding whose certificate and trustedCA are references
// to the keystore, alias and truststore the target server names, for the
// secrets service to hold.
//
// Every problem is reported at the line and column of the user's file, in
// the file's own terms (targetServer[0] "orders" sSLInfo.keyAlias), never in
// terms of the converted YAML; [Result.Manifest] carries the same positions
// into what the policy service answers at apply, so a missing alias is
// reported where targetservers.json names it.
package apigee

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"

	"keyway.dev/keywayctl/internal/manifest"
)

// MaxFileBytes bounds a target server file: what it converts to must fit
// in one apply request anyway.
const MaxFileBytes = limits.PolicyRequestBytes

// maxErrors bounds the problems one run reports: past it, the user is
// better served by fixing what is shown.
const maxErrors = 50

// ReadFile reads a target server file, refusing one larger than
// [MaxFileBytes] without reading it all.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading Apigee target servers: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading Apigee target servers: %w", err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %s; a target server file is a few kilobytes: give Apigee's targetservers.json", path, limits.Size(MaxFileBytes))
	}
	return data, nil
}

// Result is the converted manifests and what the user should know.
type Result struct {
	// YAML holds the resources, documents separated by ---.
	YAML []byte
	// Notes are decisions made for the user (a server left out, a
	// reference taken by name), each "file:line:col: where: what".
	Notes []string
	// Services and Bindings count the resources made.
	Services, Bindings int

	source string
	// origins has, for each document of YAML, where each of its fields
	// came from in the target server file.
	origins []map[string]manifest.Origin
}

// Manifest reads the converted resources back as documents whose positions
// and field names are those of the target server file, so that what the
// policy service reports about a resource (a missing alias, a cipher it
// does not know, a failed live probe) is shown where targetservers.json
// says it.
func (r *Result) Manifest() (manifest.Manifest, error) {
	docs, err := manifest.Parse(r.source+" (converted)", r.YAML)
	if err != nil {
		return nil, fmt.Errorf("reading the converted resources (print them with -o yaml): %w", err)
	}
	if len(docs) != len(r.origins) {
		return nil, fmt.Errorf("reading the converted resources: %d documents for %d converted resources (print them with -o yaml)", len(docs), len(r.origins))
	}
	for i, d := range docs {
		d.Relocate(r.origins[i])
	}
	return docs, nil
}

// Convert reads a targetservers.json (a list of target servers, or an
// object {"targetServer": [...]}) and converts it; source names the file
// in positions. Every problem is reported at once, each a
// [*manifest.Error] at the line and column of the file.
func Convert(source string, data []byte) (*Result, error) {
	c := &converter{file: source, names: map[string]string{}}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %s; a target server file is a few kilobytes: give Apigee's targetservers.json", source, limits.Size(MaxFileBytes))
	}
	root, problems := parseJSON(data)
	if len(problems) > 0 {
		for _, p := range problems {
			c.errs = append(c.errs, &manifest.Error{Pos: c.position(p.at), Msg: p.msg})
		}
		return nil, errors.Join(c.errs...)
	}
	var docs []any
	for i, ts := range c.top(root) {
		if len(c.errs) >= maxErrors {
			c.errs = append(c.errs, &manifest.Error{Pos: c.position(ts.at), Msg: fmt.Sprintf("stopping after %d problems: fix these and run the import again", len(c.errs))})
			break
		}
		docs = append(docs, c.server(i, ts)...)
	}
	if len(c.errs) > 0 {
		// In the file's order, as an editor lists them.
		slices.SortStableFunc(c.errs, func(a, b error) int {
			ea, _ := errors.AsType[*manifest.Error](a) // every problem is one
			eb, _ := errors.AsType[*manifest.Error](b)
			pa, pb := ea.Pos, eb.Pos
			return cmp.Or(cmp.Compare(pa.Line, pb.Line), cmp.Compare(pa.Column, pb.Column))
		})
		return nil, errors.Join(c.errs...)
	}
	if len(docs) == 0 {
		return nil, &manifest.Error{Pos: c.position(root.at), Msg: "no enabled target server to convert: every one has \"isEnabled\": false, or the list is empty"}
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
	return &Result{YAML: buf.Bytes(), Notes: c.sortedNotes(), Services: c.services, Bindings: c.bindings, source: source, origins: c.origins}, nil
}

type converter struct {
	file               string
	errs               []error // each a *manifest.Error
	notes              []note
	names              map[string]string // Keyway name → Apigee name
	origins            []map[string]manifest.Origin
	services, bindings int
}

// where is a place in the file and what the file calls it there.
type where struct {
	at   pos
	name string // targetServer[0] "orders" sSLInfo.keyAlias
}

// child is the place of a field of w: `targetServer[0] "orders"` and
// "sSLInfo" make `targetServer[0] "orders" sSLInfo`, which with "protocols"
// makes `… sSLInfo.protocols`, and with "[1]" `… sSLInfo.protocols[1]`.
func (w where) child(at pos, field string) where {
	if w.name == "" {
		return where{at, field}
	}
	sep := "."
	if strings.HasSuffix(w.name, `"`) || strings.HasSuffix(w.name, "]") && !strings.HasSuffix(field, "]") {
		sep = " "
	}
	if strings.HasPrefix(field, "[") {
		sep = ""
	}
	return where{at, w.name + sep + field}
}

func (c *converter) position(p pos) manifest.Position {
	return manifest.Position{File: c.file, Line: p.line, Column: p.col}
}

func (c *converter) origin(w where) manifest.Origin {
	return manifest.Origin{Pos: c.position(w.at), Name: w.name}
}

func (c *converter) errorf(w where, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if w.name != "" {
		msg = w.name + ": " + msg
	}
	c.errs = append(c.errs, &manifest.Error{Pos: c.position(w.at), Msg: msg})
}

// note is a decision made for the user, at the field it concerns.
type note struct {
	at   pos
	text string
}

func (c *converter) notef(w where, format string, args ...any) {
	c.notes = append(c.notes, note{w.at, c.position(w.at).String() + ": " + w.name + ": " + fmt.Sprintf(format, args...)})
}

// sortedNotes are the notes in the file's order.
func (c *converter) sortedNotes() []string {
	slices.SortStableFunc(c.notes, func(a, b note) int { return cmp.Compare(a.at.off, b.at.off) })
	out := make([]string, len(c.notes))
	for i, n := range c.notes {
		out[i] = n.text
	}
	return out
}

// top finds the list of target servers: the file itself, or the
// "targetServer" field of the object Apigee's list API answers with.
func (c *converter) top(root *value) []*value {
	switch root.kind {
	case kindArray:
		return root.items
	case kindObject:
		obj := c.object(root, where{root.at, ""}, []string{"targetServer"}, "the file's object holds only \"targetServer\", the list of target servers")
		list := obj.get("targetServer")
		switch {
		case list == nil:
			c.errorf(where{root.at, ""}, `the object has no "targetServer" list; give a list of target servers [{…}], or {"targetServer": [{…}]}`)
		case list.val.kind != kindArray:
			c.errorf(where{list.val.at, "targetServer"}, "want a list of target servers [{…}], got %s", list.val.describe())
		default:
			return list.val.items
		}
		return nil
	}
	c.errorf(where{root.at, ""}, `want a list of target servers [{"name": …, "host": …, "port": …}], got %s`, root.describe())
	return nil
}

// object is an object's fields by their canonical names.
type object struct {
	v      *value
	fields map[string]*member
}

func (o object) get(name string) *member {
	m := o.fields[name]
	if m == nil || m.val.kind == kindNull {
		return nil
	}
	return m
}

// object checks an object's field names against known: an unknown field is
// an error (with a suggestion), as is a field given twice. A name that
// differs from a known one in case only is taken as it, as Apigee's
// exports and encoding/json take it. what completes "unknown field X; …".
func (c *converter) object(v *value, w where, known []string, what string) object {
	o := object{v: v, fields: map[string]*member{}}
	for _, m := range v.fields {
		name := ""
		for _, k := range known {
			if strings.EqualFold(k, m.key) {
				name = k
				break
			}
		}
		fw := w.child(m.at, m.key)
		switch prev := o.fields[name]; {
		case name == "":
			msg := fmt.Sprintf("unknown field %s; %s", quote(m.key), what)
			if s := model.DidYouMean(m.key, known); s != "" {
				msg = fmt.Sprintf("unknown field %s; did you mean %q?", quote(m.key), s)
			}
			c.errorf(where{m.at, w.name}, "%s", msg)
		case prev != nil:
			c.errorf(fw, "given twice (first at %d:%d); keep one", prev.at.line, prev.at.col)
		default:
			o.fields[name] = m
		}
	}
	return o
}

// str reads a string field; absent or null is "".
func (c *converter) str(o object, w where, field string) (string, where) {
	m := o.get(field)
	if m == nil {
		return "", w.child(o.v.at, field)
	}
	fw := w.child(m.val.at, field)
	if m.val.kind != kindString {
		c.errorf(fw, "want a string, got %s", m.val.describe())
		return "", fw
	}
	return m.val.str, fw
}

// boolean reads a field written as a JSON boolean or as "true"/"false", as
// Apigee's exports write either; def when absent.
func (c *converter) boolean(o object, w where, field string, def bool) (bool, where) {
	m := o.get(field)
	if m == nil {
		return def, w.child(o.v.at, field)
	}
	fw := w.child(m.val.at, field)
	raw := m.val.raw
	switch m.val.kind {
	case kindBool:
	case kindString:
		raw = strings.ToLower(strings.TrimSpace(m.val.str))
	default:
		c.errorf(fw, "want true or false, got %s", m.val.describe())
		return def, fw
	}
	switch raw {
	case "true":
		return true, fw
	case "false":
		return false, fw
	}
	c.errorf(fw, "%s is not true or false", quote(m.val.str))
	return def, fw
}

// stringList reads a list of strings.
func (c *converter) stringList(o object, w where, field, example string) ([]string, []where) {
	m := o.get(field)
	if m == nil {
		return nil, nil
	}
	fw := w.child(m.val.at, field)
	if m.val.kind != kindArray {
		c.errorf(fw, "want a list of strings, e.g. %s, got %s", example, m.val.describe())
		return nil, nil
	}
	var (
		out []string
		at  []where
	)
	for i, it := range m.val.items {
		iw := fw.child(it.at, fmt.Sprintf("[%d]", i))
		if it.kind != kindString {
			c.errorf(iw, "want a string, got %s", it.describe())
			continue
		}
		out, at = append(out, it.str), append(at, iw)
	}
	return out, at
}

// Fields Apigee writes, as its management API spells them.
var (
	serverFields = []string{"name", "description", "host", "port", "isEnabled", "protocol", "sSLInfo"}
	sslFields    = []string{"enabled", "clientAuthEnabled", "keyStore", "keyAlias", "trustStore", "ignoreValidationErrors",
		"protocols", "ciphers", "commonName", "enforce"}
	commonNameFields = []string{"value", "wildcardMatch"}
)

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
	SkipValidation   bool            `yaml:"skipValidation"`
	TrustedCA        *truststoreRef  `yaml:"trustedCA,omitempty"`
	Certificate      *certificateRef `yaml:"certificate,omitempty"`
	MinVersion       string          `yaml:"minversion,omitempty"`
	MaxVersion       string          `yaml:"maxversion,omitempty"`
	Ciphers          []string        `yaml:"ciphers,omitempty"`
	SNI              string          `yaml:"sni,omitempty"`
	SubjectAltNames  []string        `yaml:"subjectAltNames,omitempty"`
	LegacyCommonName bool            `yaml:"legacyCommonName,omitempty"`
}

type truststoreRef struct {
	Truststore string `yaml:"truststore"`
}

type certificateRef struct {
	Keystore string `yaml:"keystore"`
	Alias    string `yaml:"alias"`
}

// server converts one target server; i is its index in the list.
func (c *converter) server(i int, v *value) []any {
	w := where{v.at, fmt.Sprintf("targetServer[%d]", i)}
	if v.kind != kindObject {
		msg := fmt.Sprintf("want a target server {\"name\": …, \"host\": …, \"port\": …}, got %s", v.describe())
		if v.kind == kindString {
			msg += " (a list of names, as Apigee's list call answers, holds no host or TLS settings: give the target servers themselves, e.g. from GET …/targetservers/NAME)"
		}
		c.errorf(w, "%s", msg)
		return nil
	}
	// The name labels every message about the server, its own fields'
	// included, so it is read first.
	for _, m := range v.fields {
		if strings.EqualFold(m.key, "name") && m.val.kind == kindString && m.val.str != "" {
			w.name = fmt.Sprintf("targetServer[%d] %s", i, quote(m.val.str))
			break
		}
	}
	before := len(c.errs)
	o := c.object(v, w, serverFields, "a target server has name, description, host, port, isEnabled, protocol and sSLInfo")
	apigeeName, nameAt := c.str(o, w, "name")
	if apigeeName != "" {
		nameAt.name = w.name + " name"
	}
	c.str(o, w, "description") // Keyway has no place for it; checked only
	enabled, _ := c.boolean(o, w, "isEnabled", true)
	if !enabled {
		c.notef(w, "left out: isEnabled is false")
		return nil
	}
	name := c.name(nameAt, apigeeName, o.get("name"))
	host, hostAt := c.str(o, w, "host")
	c.host(hostAt, o.get("host") != nil, host)
	port, _ := c.port(o, w)
	protocol, protocolAt := c.str(o, w, "protocol")
	switch strings.ToUpper(protocol) {
	case "", "HTTP", "PROTOCOL_UNSPECIFIED":
		protocol = ""
	case "HTTP2":
		protocol = "h2"
	case "GRPC", "GRPC_TARGET":
		protocol = "grpc"
	default:
		c.errorf(protocolAt, "%s has no Keyway equivalent; Keyway Services speak http1, h2 or grpc: write HTTP, HTTP2, GRPC_TARGET or GRPC", quote(protocol))
	}

	var sslAt where
	var ssl *object
	if m := o.get("sSLInfo"); m != nil {
		sslAt = w.child(m.val.at, "sSLInfo")
		if m.val.kind != kindObject {
			c.errorf(sslAt, "want an object {\"enabled\": true, \"trustStore\": …}, got %s", m.val.describe())
		} else {
			so := c.object(m.val, sslAt, sslFields, "sSLInfo has enabled, clientAuthEnabled, keyStore, keyAlias, trustStore, ignoreValidationErrors, protocols, ciphers, commonName and enforce")
			ssl = &so
		}
	}
	var binding *bindingDoc
	var bindingOrigins map[string]manifest.Origin
	if ssl != nil {
		binding, bindingOrigins = c.tls(sslAt, *ssl, name, nameAt, host)
	}
	if len(c.errs) != before {
		return nil
	}
	c.services++
	svcOrigins := map[string]manifest.Origin{
		"":              c.origin(w),
		"metadata":      c.origin(nameAt),
		"metadata.name": c.origin(nameAt),
		"spec":          c.origin(w),
		"spec.address":  c.origin(hostAt),
	}
	if protocol != "" {
		svcOrigins["spec.protocol"] = c.origin(protocolAt)
	}
	c.origins = append(c.origins, svcOrigins)
	docs := []any{serviceDoc{
		APIVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: meta{Name: name},
		Spec: serviceSpec{Address: net.JoinHostPort(host, strconv.Itoa(port)), Protocol: protocol},
	}}
	if binding != nil {
		c.bindings++
		c.origins = append(c.origins, bindingOrigins)
		docs = append(docs, *binding)
	}
	return docs
}

// host checks a target server's host: a name or an address, alone.
func (c *converter) host(w where, given bool, host string) {
	switch {
	case !given:
		c.errorf(w, "missing; give the upstream's host name or IP address, e.g. \"host\": \"orders.internal\"")
	case host == "":
		c.errorf(w, "empty; give the upstream's host name or IP address")
	case strings.Contains(host, "://"):
		c.errorf(w, "%s has a scheme; give the host name alone (sSLInfo says whether TLS is used)", quote(host))
	case strings.ContainsAny(host, "/ \t?#@"):
		c.errorf(w, "%s is not a host name or an IP address; give the host alone, without path or credentials", quote(host))
	case strings.Contains(host, ":") && net.ParseIP(host) == nil:
		c.errorf(w, "%s holds a port; give the host alone and the port in \"port\"", quote(host))
	case len(host) > limits.HostBytes:
		c.errorf(w, "%s", limits.TooLong("host", len(host), limits.HostBytes))
	}
}

// port reads "port": a number or a string of digits, 1 to 65535.
func (c *converter) port(o object, w where) (int, where) {
	m := o.get("port")
	if m == nil {
		c.errorf(w.child(o.v.at, "port"), "missing; give the upstream's port, e.g. \"port\": 443")
		return 0, where{}
	}
	pw := w.child(m.val.at, "port")
	raw := m.val.raw
	switch m.val.kind {
	case kindNumber:
	case kindString:
		raw = strings.TrimSpace(m.val.str)
	default:
		c.errorf(pw, "want a port number (1-65535), got %s", m.val.describe())
		return 0, pw
	}
	p, err := strconv.Atoi(raw)
	if err != nil || p < 1 || p > 65535 {
		c.errorf(pw, "%s is not a port number (1-65535)", quote(limit(raw)))
		return 0, pw
	}
	return p, pw
}

// name turns an Apigee name into a Keyway resource name (lowercase
// letters, digits and hyphens, at most 64, starting with a letter).
func (c *converter) name(w where, apigee string, m *member) string {
	switch {
	case m == nil:
		c.errorf(w, "missing; every target server needs one, e.g. \"name\": \"orders\"")
		return ""
	case m.val.kind != kindString:
		return "" // reported by str
	case apigee == "":
		c.errorf(w, "empty; every target server needs a name, e.g. \"name\": \"orders\"")
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
		c.errorf(w, "becomes the Keyway name %q, as target server %s does; rename one of them", name, quote(other))
		return name
	}
	c.names[name] = apigee
	if name != apigee {
		c.notef(w, "named %q in Keyway (resource names are lowercase letters, digits and hyphens)", name)
	}
	return name
}

// tls converts sSLInfo into a tls-outbound binding, or nil for plain HTTP,
// and says where each of its fields came from.
func (c *converter) tls(w where, o object, service string, nameAt where, host string) (*bindingDoc, map[string]manifest.Origin) {
	enabled, _ := c.boolean(o, w, "enabled", false)
	c.boolean(o, w, "enforce", false) // Keyway never falls back to plain HTTP; checked only
	keyStore, keyStoreAt := c.str(o, w, "keyStore")
	keyAlias, keyAliasAt := c.str(o, w, "keyAlias")
	trustStore, trustStoreAt := c.str(o, w, "trustStore")
	ignore, ignoreAt := c.boolean(o, w, "ignoreValidationErrors", false)
	clientAuth, clientAuthAt := c.boolean(o, w, "clientAuthEnabled", false)
	protocols, protocolsAt := c.stringList(o, w, "protocols", `["TLSv1.2", "TLSv1.3"]`)
	ciphers, ciphersAt := c.stringList(o, w, "ciphers", `["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]`)
	if !enabled {
		if keyStore != "" || trustStore != "" {
			c.notef(w, "enabled is false: the upstream is reached over plain HTTP and keyStore/trustStore are ignored")
		}
		return nil, nil
	}
	origins := map[string]manifest.Origin{
		"":                           c.origin(w),
		"metadata":                   c.origin(nameAt),
		"metadata.name":              c.origin(nameAt),
		"spec":                       c.origin(w),
		"spec.targetRef":             c.origin(nameAt),
		"spec.policyRef":             c.origin(w),
		"spec.config":                c.origin(w),
		"spec.config.skipValidation": c.origin(ignoreAt),
	}
	cfg := tlsConfig{SkipValidation: ignore}
	switch {
	case ignore:
		c.notef(ignoreAt, "true: skipValidation: true, upstream certificates are not verified (the policy service warns)")
		if trustStore != "" {
			c.notef(trustStoreAt, "%s is left out because certificates are not verified", quote(trustStore))
		}
	case trustStore == "" && o.get("trustStore") != nil:
		if o.get("trustStore").val.kind == kindString { // another type is reported already
			c.errorf(trustStoreAt, "empty; give the name of the truststore that holds the CAs of the upstream's certificate")
		}
	case trustStore == "":
		c.errorf(w, "trustStore is missing and ignoreValidationErrors is false: Apigee then trusts its default CAs, Keyway trusts only what the binding names; "+
			"add \"trustStore\": \"NAME\" and store the CAs that sign the upstream's certificate under it (keywayctl secrets put --truststore NAME --cert CA.pem), "+
			"or set \"ignoreValidationErrors\": true")
	default:
		cfg.TrustedCA = &truststoreRef{Truststore: c.reference(trustStoreAt, trustStore)}
		origins["spec.config.trustedCA"] = c.origin(trustStoreAt)
		origins["spec.config.trustedCA.truststore"] = c.origin(trustStoreAt)
	}

	switch {
	case clientAuth && (keyStore == "" || keyAlias == ""):
		var missing []string
		for _, f := range []struct {
			name, value string
			at          where
		}{{"keyStore", keyStore, keyStoreAt}, {"keyAlias", keyAlias, keyAliasAt}} {
			switch m := o.get(f.name); {
			case f.value != "":
			case m == nil:
				missing = append(missing, f.name)
			case m.val.kind == kindString: // another type is reported already
				c.errorf(f.at, "empty; give the name of the %s of the key pair the gateway presents", strings.TrimPrefix(strings.ToLower(f.name), "key"))
			}
		}
		if len(missing) > 0 {
			verb := " is"
			if len(missing) > 1 {
				verb = " are"
			}
			c.errorf(clientAuthAt, "true, but %s missing: give keyStore and keyAlias, the keystore and the alias of the key pair the gateway presents "+
				"(stored with keywayctl secrets put --keystore KEYSTORE --alias ALIAS --cert CERT.pem --key KEY.pem)", strings.Join(missing, " and ")+verb)
		}
	case clientAuth:
		cfg.Certificate = &certificateRef{Keystore: c.reference(keyStoreAt, keyStore), Alias: keyAlias}
		c.storeName(keyAliasAt, "alias", keyAlias)
		origins["spec.config.certificate"] = c.origin(keyAliasAt)
		origins["spec.config.certificate.keystore"] = c.origin(keyStoreAt)
		origins["spec.config.certificate.alias"] = c.origin(keyAliasAt)
	case keyStore != "" || keyAlias != "":
		c.notef(w, "keyStore/keyAlias are left out because clientAuthEnabled is false (no client certificate is sent)")
	}

	if len(protocolsAt) > 0 {
		cfg.MinVersion, cfg.MaxVersion = c.protocols(protocolsAt, protocols)
		origins["spec.config.minversion"] = c.origin(protocolsAt[0])
		origins["spec.config.maxversion"] = c.origin(protocolsAt[len(protocolsAt)-1])
	}
	cfg.Ciphers = ciphers
	for j, at := range ciphersAt {
		origins[fmt.Sprintf("spec.config.ciphers[%d]", j)] = c.origin(at)
	}
	if len(ciphersAt) > 0 {
		origins["spec.config.ciphers"] = c.origin(ciphersAt[0])
	}

	if !ignore {
		if cn, cnAt := c.commonName(o, w); cn != "" {
			if net.ParseIP(host) != nil && !strings.HasPrefix(cn, "*.") {
				// The name is not the host: it is the name the
				// upstream's certificate is checked against.
				cfg.SNI = cn
				origins["spec.config.sni"] = c.origin(cnAt)
				c.notef(cnAt, "%s becomes sni: %s: the upstream at %s is asked for that name, and its certificate must be issued for it", quote(cn), limit(cn), limit(host))
			} else {
				cfg.SubjectAltNames = []string{cn}
				origins["spec.config.subjectAltNames"] = c.origin(cnAt)
				origins["spec.config.subjectAltNames[0]"] = c.origin(cnAt)
				c.notef(cnAt, "%s becomes subjectAltNames: [%s]: the upstream's certificate must name it", quote(cn), limit(cn))
			}
		}
		// Apigee accepts an upstream certificate whose name is only in
		// its Common Name, as the guide's my_server.pem is made; Go
		// checks names against SANs only. The binding keeps the name
		// check and lets the CN stand in for a missing SAN.
		cfg.LegacyCommonName = true
		origins["spec.config.legacyCommonName"] = c.origin(w)
		c.notef(w, "legacyCommonName: true: as Apigee does, an upstream certificate with only a Common Name (what openssl req -subj '/CN=…' makes) is accepted; "+
			"its name is still checked (the SANs, else the CN), and so are its chain and expiry (apply warns)")
	}
	return &bindingDoc{
		APIVersion: "keyway.dev/v1alpha1", Kind: "PolicyBinding", Metadata: meta{Name: service + "-tls"},
		Spec: bindingSpec{
			TargetRef: targetRef{Kind: "Service", Name: service},
			PolicyRef: policyRef{Name: "tls-outbound"},
			Config:    cfg,
		},
	}, origins
}

// storeName checks a keystore, alias or truststore name against what the
// secrets service accepts ([secretref.NameRule]).
func (c *converter) storeName(w where, what, name string) {
	if name == "" {
		return
	}
	if len(name) > limits.SecretNameBytes {
		c.errorf(w, "%s is %d characters long; Keyway's %s names are at most %d: store it under a shorter name and write that here", quote(name), len(name), what, limits.SecretNameBytes)
		return
	}
	if r, bad := secretref.InvalidRune(name); bad {
		c.errorf(w, "%s has the character %q; Keyway's %s names are letters, digits, hyphens and underscores: store it under such a name and write that here", quote(name), r, what)
	}
}

// reference takes a keystore or truststore name; an Apigee reference
// ("ref://name") is taken by its name, with a note, since Keyway names the
// store directly.
func (c *converter) reference(w where, value string) string {
	what := "keystore"
	if strings.HasSuffix(w.name, "trustStore") {
		what = "truststore"
	}
	name, isRef := strings.CutPrefix(value, "ref://")
	if isRef {
		c.notef(w, "%s is an Apigee reference; Keyway names stores directly, so %s is used as the %s's name: store it under that name in the secrets service, or write the name of the %s the reference points at", quote(value), quote(name), what, what)
	}
	c.storeName(w, what, name)
	return name
}

// protocols turns Apigee's protocol list ("TLSv1.2", "1.3") into the range
// from the lowest to the highest.
func (c *converter) protocols(at []where, list []string) (string, string) {
	var versions []string
	for i, p := range list {
		v := strings.TrimSpace(p)
		v = strings.TrimPrefix(strings.TrimPrefix(strings.ToUpper(v), "TLS"), "V")
		switch v {
		case "1.1", "1.2", "1.3":
			if !slices.Contains(versions, v) {
				versions = append(versions, v)
			}
		case "1", "1.0":
			c.errorf(at[i], "%s (TLS 1.0) is not supported by Keyway; remove it (1.1, 1.2 and 1.3 are)", quote(p))
		default:
			c.errorf(at[i], "%s is not a TLS version; write \"TLSv1.2\" or \"1.2\" (1.1, 1.2 and 1.3 are supported)", quote(p))
		}
	}
	if len(versions) == 0 {
		return "", ""
	}
	slices.Sort(versions)
	lo, hi := versions[0], versions[len(versions)-1]
	if lo == "1.1" && hi == "1.3" && !slices.Contains(versions, "1.2") {
		c.notef(at[0], "lists 1.1 and 1.3 without 1.2; Keyway enables the whole range 1.1 to 1.3")
	}
	return lo, hi
}

// commonName reads sSLInfo.commonName: {"value": …, "wildcardMatch": …}
// or a plain string.
func (c *converter) commonName(o object, w where) (string, where) {
	m := o.get("commonName")
	if m == nil {
		return "", w
	}
	cw := w.child(m.val.at, "commonName")
	var value string
	switch m.val.kind {
	case kindString:
		value = m.val.str
	case kindObject:
		co := c.object(m.val, cw, commonNameFields, "commonName has value and wildcardMatch")
		var vw where
		value, vw = c.str(co, cw, "value")
		cw = vw
		if wild, _ := c.boolean(co, cw, "wildcardMatch", false); wild && value != "" && !strings.HasPrefix(value, "*.") {
			c.notef(cw, "%s with wildcardMatch: Keyway matches a name exactly, or a wildcard by \"*.\"; write \"*.domain\" to accept any name under it", quote(value))
		}
	default:
		c.errorf(cw, "want a string or {\"value\": …, \"wildcardMatch\": …}, got %s", m.val.describe())
	}
	return strings.ToLower(strings.TrimSpace(value)), cw
}
