package ctlconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Env names the environment variable that holds the file's path; without
// it the file is [DefaultPath]'s.
const Env = "KEYWAYCONFIG"

// MaxFileSize bounds the file. It is checked before the file is parsed: a
// configuration of contexts is a few kilobytes, so anything larger is the
// wrong file.
const MaxFileSize = 1 << 20

// Bounds of the fields, checked before anything else is.
const (
	MaxNameLength  = 253  // a context's name and currentContext
	MaxURLLength   = 2048 // server and secretsServer
	MaxPathLength  = 4096 // ca, cert, key and tokenFile (PATH_MAX)
	MaxTokenLength = 4096 // token
)

// Redacted stands in for a token's value wherever a context is shown.
const Redacted = "REDACTED"

// Config is the file: its contexts and the current one.
type Config struct {
	// CurrentContext names the context keywayctl uses when --context does
	// not name one; empty for none.
	CurrentContext string `yaml:"currentContext,omitempty" json:"currentContext,omitempty"`
	// Contexts are in the file's order; names are unique.
	Contexts []Context `yaml:"contexts" json:"contexts"`

	// file is the path the Config was loaded from, for messages.
	file string
}

// Context says where Keyway's services are and how to authenticate to them.
// Empty fields leave the choice to flags, the environment and defaults.
// Relative paths are relative to the file's folder (see [Context.Resolve]).
type Context struct {
	Name string `yaml:"name" json:"name"`
	// Server is the policy service's URL.
	Server string `yaml:"server,omitempty" json:"server,omitempty"`
	// SecretsServer is the secrets service's API URL.
	SecretsServer string `yaml:"secretsServer,omitempty" json:"secretsServer,omitempty"`
	// CA is a PEM file of the CA certificates that sign the services' API
	// certificates; empty trusts the system's roots.
	CA string `yaml:"ca,omitempty" json:"ca,omitempty"`
	// Cert and Key are the PEM files of the client certificate keywayctl
	// presents, and its private key; both or neither.
	Cert string `yaml:"cert,omitempty" json:"cert,omitempty"`
	Key  string `yaml:"key,omitempty" json:"key,omitempty"`
	// Token is a bearer token; TokenFile a file holding one. At most one
	// of them. Prefer TokenFile: the token then stays out of this file.
	Token     string `yaml:"token,omitempty" json:"token,omitempty"`
	TokenFile string `yaml:"tokenFile,omitempty" json:"tokenFile,omitempty"`
}

// configFields and contextFields are the keys the file may hold, in the
// order messages list them.
var (
	configFields  = []string{"currentContext", "contexts"}
	contextFields = []string{"name", "server", "secretsServer", "ca", "cert", "key", "token", "tokenFile"}
)

// FieldError is one problem in the file: where it is, and what to change.
type FieldError struct {
	// File is the file's path; empty when the bytes came from elsewhere.
	File string
	// Field is the path to the field, as contexts[1].server.
	Field string
	// Line is the line of the field in the file; 0 when unknown.
	Line int
	// Problem says what is wrong and how to fix it.
	Problem string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	return b.String()
}

// DefaultPath is the file keywayctl reads: $KEYWAYCONFIG, else
// $HOME/.config/keyway/config.yaml. getenv reads the environment
// (os.Getenv), so that tests choose what it sees.
func DefaultPath(getenv func(string) string) (string, error) {
	if p := getenv(Env); p != "" {
		return p, nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", fmt.Errorf("finding keywayctl's config file: neither %s nor HOME is set; set %s to the file's path", Env, Env)
	}
	return filepath.Join(home, ".config", "keyway", "config.yaml"), nil
}

// Load reads and validates the file at path. A missing file is an error
// that matches [fs.ErrNotExist]; callers that treat it as empty check for
// it. Every problem is a [*FieldError] naming the file, joined with
// [errors.Join].
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading keywayctl config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading keywayctl config: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, &FieldError{File: path, Problem: "not a regular file; point " + Env + " at a YAML file"}
	}
	if st.Size() > MaxFileSize {
		return nil, tooLarge(path, st.Size())
	}
	// The file may grow between Stat and ReadAll: read at most one byte
	// more than allowed.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading keywayctl config %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(path, int64(len(data)))
	}
	c, err := parse(data, path)
	if err != nil {
		return nil, err
	}
	c.file = path
	return c, nil
}

func tooLarge(path string, size int64) error {
	return &FieldError{File: path, Problem: fmt.Sprintf("%d bytes, more than the %d a keywayctl config may have: is %s the right file?", size, MaxFileSize, Env)}
}

// Parse reads a configuration from data and validates it, as [Load] does
// with a file's content.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, tooLarge("", int64(len(data)))
	}
	return parse(data, "")
}

func parse(data []byte, file string) (*Config, error) {
	fail := func(errs []error) error {
		for _, e := range errs {
			if fe, ok := errors.AsType[*FieldError](e); ok {
				fe.File = file
			}
		}
		return errors.Join(errs...)
	}
	c := &Config{}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fail([]error{&FieldError{Problem: "not YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}})
	}
	if len(doc.Content) == 0 {
		return c, nil // an empty file has no contexts
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return c, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fail([]error{&FieldError{Line: root.Line, Problem: "want a mapping with currentContext and contexts"}})
	}
	lines := map[string]int{}
	// Every problem is reported at once: unknown fields, then wrong
	// types or invalid values, in the file's order.
	errs := checkKeys(root, lines)
	if err := root.Decode(c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fail(append(errs, &FieldError{Problem: err.Error()}))
		}
		for _, m := range te.Errors {
			errs = append(errs, &FieldError{Problem: m + "; every field is a string, contexts a list"})
		}
		return nil, fail(errs)
	}
	if err := c.Validate(); err != nil {
		for _, e := range unjoin(err) {
			if fe, ok := errors.AsType[*FieldError](e); ok {
				fe.Line = lineOf(lines, fe.Field)
			}
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b error) int { return lineOfError(a) - lineOfError(b) })
		return nil, fail(errs)
	}
	return c, nil
}

func lineOfError(err error) int {
	if fe, ok := errors.AsType[*FieldError](err); ok {
		return fe.Line
	}
	return 0
}

// checkKeys refuses keys the format does not have, so that a misspelt
// field is not silently ignored, and records the line of each field.
func checkKeys(root *yaml.Node, lines map[string]int) []error {
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		lines[k.Value] = k.Line
		if !slices.Contains(configFields, k.Value) {
			errs = append(errs, unknownField(quote(k.Value), k.Line, configFields))
			continue
		}
		if k.Value != "contexts" || v.Kind != yaml.SequenceNode {
			continue // Decode reports a wrong type
		}
		for j, item := range v.Content {
			at := fmt.Sprintf("contexts[%d]", j)
			lines[at] = item.Line
			if item.Kind != yaml.MappingNode {
				continue
			}
			for n := 0; n+1 < len(item.Content); n += 2 {
				ck := item.Content[n]
				lines[at+"."+ck.Value] = ck.Line
				if !slices.Contains(contextFields, ck.Value) {
					errs = append(errs, unknownField(at+"."+quote(ck.Value), ck.Line, contextFields))
				}
			}
		}
	}
	return errs
}

func unknownField(field string, line int, known []string) error {
	return &FieldError{Field: field, Line: line, Problem: "unknown field; the fields are " + strings.Join(known, ", ")}
}

// lineOf is the line of field, or of the nearest enclosing field known.
func lineOf(lines map[string]int, field string) int {
	for f := field; f != ""; {
		if l, ok := lines[f]; ok {
			return l
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			return 0
		}
		f = f[:i]
	}
	return 0
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// quote shows a value in a message: at most 64 characters of it, quoted.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q… (%d bytes)", s[:max], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// Validate checks every context and returns every problem as a
// [*FieldError] joined with [errors.Join]. A currentContext that names no
// context is not one: it is reported when used, so that use-context can
// repair it.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{File: c.file, Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if len(c.CurrentContext) > MaxNameLength {
		add("currentContext", "%d bytes, more than %d; fix: keywayctl config use-context NAME", len(c.CurrentContext), MaxNameLength)
	}
	seen := map[string]int{}
	for i, x := range c.Contexts {
		at := fmt.Sprintf("contexts[%d]", i)
		switch {
		case x.Name == "":
			add(at+".name", "missing; give the context a name (keywayctl --context NAME selects it)")
		case len(x.Name) > MaxNameLength:
			add(at+".name", "%s is longer than %d bytes; choose a shorter name", quote(x.Name), MaxNameLength)
		case !validName(x.Name):
			add(at+".name", "%s: a name is letters, digits and . _ - @ : / only", quote(x.Name))
		default:
			if j, dup := seen[x.Name]; dup {
				add(at+".name", "%s is also contexts[%d]'s name; rename or delete one of them", quote(x.Name), j)
			} else {
				seen[x.Name] = i
			}
		}
		for _, u := range []struct{ field, value, example string }{
			{"server", x.Server, "https://127.0.0.1:8081"},
			{"secretsServer", x.SecretsServer, "https://127.0.0.1:8082"},
		} {
			if msg := checkURL(u.value); msg != "" {
				add(at+"."+u.field, "%s: %s, such as %s", quote(u.value), msg, u.example)
			}
		}
		for _, p := range []struct{ field, value string }{{"ca", x.CA}, {"cert", x.Cert}, {"key", x.Key}, {"tokenFile", x.TokenFile}} {
			switch {
			case len(p.value) > MaxPathLength:
				add(at+"."+p.field, "a path of %d bytes, more than %d", len(p.value), MaxPathLength)
			case strings.ContainsRune(p.value, 0):
				add(at+"."+p.field, "%s: a path cannot hold a NUL byte", quote(p.value))
			}
		}
		switch {
		case x.Cert != "" && x.Key == "":
			add(at+".key", "missing: cert is set, so key must name its private key file")
		case x.Key != "" && x.Cert == "":
			add(at+".cert", "missing: key is set, so cert must name its certificate file")
		}
		if x.Token != "" && x.TokenFile != "" {
			add(at+".token", "both token and tokenFile are set; keep one (tokenFile keeps the token out of this file)")
		}
		switch {
		case len(x.Token) > MaxTokenLength:
			add(at+".token", "%d bytes, more than %d", len(x.Token), MaxTokenLength)
		case x.Token != "" && !validToken(x.Token):
			add(at+".token", "holds a space or a control character; a bearer token is printable ASCII without spaces")
		}
	}
	return errors.Join(errs...)
}

func validName(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("._-@:/", r):
		default:
			return false
		}
	}
	return true
}

// validToken is what an Authorization header value may carry after
// "Bearer ": visible ASCII.
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// checkURL says what is wrong with a service URL; "" when nothing is (or
// it is empty).
func checkURL(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > MaxURLLength {
		return fmt.Sprintf("longer than %d bytes; want a URL", MaxURLLength)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "want an https:// (or http://) URL"
	}
	return ""
}

// File is the path the configuration was loaded from; empty when it was
// parsed from bytes or made in memory.
func (c *Config) File() string { return c.file }

// Names are the contexts' names, in the file's order.
func (c *Config) Names() []string {
	names := make([]string, len(c.Contexts))
	for i, x := range c.Contexts {
		names[i] = x.Name
	}
	return names
}

// Context returns the context called name. When there is none, the error
// lists the contexts there are and says how to make one.
func (c *Config) Context(name string) (Context, error) {
	for _, x := range c.Contexts {
		if x.Name == name {
			return x, nil
		}
	}
	where := "the keywayctl config"
	if c.file != "" {
		where = c.file
	}
	if len(c.Contexts) == 0 {
		return Context{}, fmt.Errorf("no context %s: %s has no contexts; make one with keywayctl config set-context %s --server URL", quote(name), where, name)
	}
	return Context{}, fmt.Errorf("no context %s in %s; the contexts are %s (keywayctl config get-contexts lists them; set-context makes one)",
		quote(name), where, strings.Join(c.Names(), ", "))
}

// Set adds x, or replaces the context of the same name in place. It
// reports whether x was added.
func (c *Config) Set(x Context) (added bool) {
	for i := range c.Contexts {
		if c.Contexts[i].Name == x.Name {
			c.Contexts[i] = x
			return false
		}
	}
	c.Contexts = append(c.Contexts, x)
	return true
}

// Delete removes the context called name, and clears currentContext when
// it named that context.
func (c *Config) Delete(name string) error {
	if _, err := c.Context(name); err != nil {
		return err
	}
	c.Contexts = slices.DeleteFunc(c.Contexts, func(x Context) bool { return x.Name == name })
	if c.CurrentContext == name {
		c.CurrentContext = ""
	}
	return nil
}

// Redacted is the configuration as it may be shown: tokens replaced by
// [Redacted].
func (c *Config) Redacted() *Config {
	out := &Config{CurrentContext: c.CurrentContext, file: c.file, Contexts: make([]Context, len(c.Contexts))}
	for i, x := range c.Contexts {
		out.Contexts[i] = x.Redacted()
	}
	return out
}

// Redacted is the context with its token, if any, replaced by [Redacted].
func (x Context) Redacted() Context {
	if x.Token != "" {
		x.Token = Redacted
	}
	return x
}

// Auth says how the context authenticates: "client certificate", "token",
// "token file", both joined by " + ", or "none".
func (x Context) Auth() string {
	var how []string
	if x.Cert != "" || x.Key != "" {
		how = append(how, "client certificate")
	}
	switch {
	case x.Token != "":
		how = append(how, "token")
	case x.TokenFile != "":
		how = append(how, "token file")
	}
	if len(how) == 0 {
		return "none"
	}
	return strings.Join(how, " + ")
}

// Resolve returns the context with its relative paths (ca, cert, key,
// tokenFile) made absolute against dir, the folder of the file they were
// read from, as kubectl resolves kubeconfig paths.
func (x Context) Resolve(dir string) Context {
	for _, p := range []*string{&x.CA, &x.Cert, &x.Key, &x.TokenFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return x
}

// Marshal is the file's YAML for c.
func Marshal(c *Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Save validates c and writes it to path atomically (a temporary file in
// the same folder, synced, then renamed over the old one) with mode 0600:
// a context may hold a token. The folder is made (0700) if need be; a
// symbolic link at path is followed, so the file it points at is replaced.
// Save does not lock; [Update] does.
func Save(path string, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	data, err := Marshal(c)
	if err != nil {
		return fmt.Errorf("writing keywayctl config %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return tooLarge(path, int64(len(data)))
	}
	target := followLink(path)
	dir := filepath.Dir(target)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing keywayctl config: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(target)+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing keywayctl config: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if err := writeSynced(tmp, data); err != nil {
		return fmt.Errorf("writing keywayctl config %s: %w", target, err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("writing keywayctl config: %w", err)
	}
	// The rename is durable once the folder is synced; a failure here
	// leaves a complete file, so it is not reported.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func writeSynced(f *os.File, data []byte) error {
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// followLink is the file a symbolic link at path points at, or path.
func followLink(path string) string {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if real, err := filepath.EvalSymlinks(path); err == nil {
			return real
		}
	}
	return path
}

// Update reads the file at path (a missing one is empty), lets change
// modify it, and saves it, holding a lock file (path + ".lock") meanwhile
// so that two writers do not lose each other's changes. Nothing is written
// when change fails.
func Update(path string, change func(*Config) error) error {
	target := followLink(path)
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return fmt.Errorf("writing keywayctl config: %w", err)
	}
	unlock, err := lock(target)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := Load(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c = &Config{file: path}
	case err != nil:
		return err
	}
	c.file = path
	if err := change(c); err != nil {
		return err
	}
	return Save(target, c)
}

// Upsert writes x into the file at path, merging it with what is there:
// a context of the same name is replaced, the others are kept. With
// makeCurrent, x becomes the current context; otherwise only when the file
// names none, so that a first context is usable at once. It returns the
// current context after the change. A launcher (keyway-dev) calls it to
// give keywayctl its context, as kind writes kubeconfig.
func Upsert(path string, x Context, makeCurrent bool) (current string, err error) {
	err = Update(path, func(c *Config) error {
		c.Set(x)
		if makeCurrent || c.CurrentContext == "" {
			c.CurrentContext = x.Name
		}
		current = c.CurrentContext
		return nil
	})
	return current, err
}
