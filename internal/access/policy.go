package access

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/identity"
	"keyway.dev/internal/model"
)

// APIVersion and Kind identify an access policy file.
const (
	APIVersion = "keyway.dev/v1alpha1"
	Kind       = "AccessPolicy"
)

// tokenField is the subject field holding a bearer token's digest.
const tokenField = "tokenSHA256"

// tokenHint says how to mint a token and its digest.
const tokenHint = "the policy holds a token's SHA-256 as 64 hex digits, never the token: mint one with `TOKEN=$(openssl rand -hex 32)` and write the output of `printf %s \"$TOKEN\" | sha256sum`"

// Policy is a validated access policy: which identities hold which roles.
// It is immutable and safe for concurrent use.
type Policy struct {
	// Name is metadata.name.
	Name     string
	bindings []binding
}

type binding struct {
	role   Role
	rules  []identity.Rule
	tokens [][sha256.Size]byte
}

// ValidationError lists every problem of a policy file, each with its
// field path and fix.
type ValidationError struct {
	// File is the file's path, when it was read from one.
	File       string
	Violations []model.Violation
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("access policy")
	if e.File != "" {
		fmt.Fprintf(&b, " %s", e.File)
	}
	b.WriteString(" is not valid:")
	for _, v := range e.Violations {
		if v.Field != "" {
			fmt.Fprintf(&b, "\n  %s: %s", v.Field, v.Message)
		} else {
			fmt.Fprintf(&b, "\n  %s", v.Message)
		}
	}
	return b.String()
}

// LoadPolicy reads and validates the access policy file at path.
func LoadPolicy(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the access policy: %w", err)
	}
	p, err := ParsePolicy(data)
	var ve *ValidationError
	if errors.As(err, &ve) {
		ve.File = path
	}
	return p, err
}

// ParsePolicy validates an access policy in YAML or JSON. All problems are
// reported at once as a *[ValidationError]; unknown fields are refused.
func ParsePolicy(data []byte) (*Policy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &ValidationError{Violations: []model.Violation{{Message: fmt.Sprintf("not YAML or JSON: %v", err)}}}
	}
	c := &parser{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		c.errorf("", "the file is empty; write an AccessPolicy (apiVersion: %s, kind: %s, spec.bindings)", APIVersion, Kind)
		return nil, c.err()
	}
	p := c.policy(doc.Content[0])
	if err := c.err(); err != nil {
		return nil, err
	}
	return p, nil
}

// parser collects violations while walking the document.
type parser struct{ violations []model.Violation }

func (c *parser) errorf(at, format string, args ...any) {
	c.violations = append(c.violations, model.Violation{Field: at, Message: fmt.Sprintf(format, args...)})
}

func (c *parser) err() error {
	if len(c.violations) == 0 {
		return nil
	}
	return &ValidationError{Violations: c.violations}
}

func child(at, name string) string {
	if at == "" {
		return name
	}
	return at + "." + name
}

// fields checks that node is a mapping with known keys only and returns
// its values by key.
func (c *parser) fields(at string, node *yaml.Node, known ...string) map[string]*yaml.Node {
	if node.Kind != yaml.MappingNode {
		what := "the document"
		if at != "" {
			what = at
		}
		c.errorf(at, "%s must be a mapping of fields (%s)", what, strings.Join(known, ", "))
		return nil
	}
	out := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, value := node.Content[i].Value, node.Content[i+1]
		if !contains(known, key) {
			msg := fmt.Sprintf("unknown field %q; the fields here are %s", bounded(key), strings.Join(known, ", "))
			if s := model.DidYouMean(key, known); s != "" {
				msg += fmt.Sprintf(": did you mean %q?", s)
			}
			c.errorf(child(at, bounded(key)), "%s", msg)
			continue
		}
		if _, dup := out[key]; dup {
			c.errorf(child(at, bounded(key)), "the field is given twice; keep one")
			continue
		}
		out[key] = value
	}
	return out
}

func (c *parser) scalar(at string, node *yaml.Node) (string, bool) {
	if node == nil {
		return "", false
	}
	if node.Kind != yaml.ScalarNode || node.Tag == "!!null" {
		c.errorf(at, "must be a string")
		return "", false
	}
	return node.Value, true
}

func (c *parser) policy(root *yaml.Node) *Policy {
	f := c.fields("", root, "apiVersion", "kind", "metadata", "spec")
	if f == nil {
		return nil
	}
	if v, ok := c.scalar("apiVersion", f["apiVersion"]); !ok && f["apiVersion"] == nil {
		c.errorf("apiVersion", "is missing; write apiVersion: %s", APIVersion)
	} else if ok && v != APIVersion {
		c.errorf("apiVersion", "%q is not supported; write apiVersion: %s", bounded(v), APIVersion)
	}
	if v, ok := c.scalar("kind", f["kind"]); !ok && f["kind"] == nil {
		c.errorf("kind", "is missing; write kind: %s", Kind)
	} else if ok && v != Kind {
		c.errorf("kind", "%q is not an access policy; write kind: %s", bounded(v), Kind)
	}
	p := &Policy{}
	if md := f["metadata"]; md != nil {
		mf := c.fields("metadata", md, "name")
		if n := mf["name"]; n != nil {
			p.Name, _ = c.scalar("metadata.name", n)
		}
	}
	spec := f["spec"]
	if spec == nil {
		c.errorf("spec", "is missing; write spec.bindings, a list of {role, subjects}")
		return p
	}
	sf := c.fields("spec", spec, "bindings")
	bl := sf["bindings"]
	if bl == nil {
		if sf != nil {
			c.errorf("spec.bindings", "is missing; list the roles and who holds them, e.g. - {role: operator, subjects: [{cn: ci-bot}]}")
		}
		return p
	}
	if bl.Kind != yaml.SequenceNode {
		c.errorf("spec.bindings", "must be a list of {role, subjects}")
		return p
	}
	for i, bn := range bl.Content {
		if b, ok := c.binding(fmt.Sprintf("spec.bindings[%d]", i), bn); ok {
			p.bindings = append(p.bindings, b)
		}
	}
	return p
}

func (c *parser) binding(at string, node *yaml.Node) (binding, bool) {
	f := c.fields(at, node, "role", "subjects")
	if f == nil {
		return binding{}, false
	}
	var b binding
	ok := true
	if rn := f["role"]; rn == nil {
		c.errorf(child(at, "role"), "is missing; give one of %s", roleList())
		ok = false
	} else if v, vok := c.scalar(child(at, "role"), rn); vok {
		b.role = Role(v)
		if !contains(Roles, b.role) {
			msg := fmt.Sprintf("%q is not a role; give one of %s", bounded(v), roleList())
			names := make([]string, len(Roles))
			for i, r := range Roles {
				names[i] = string(r)
			}
			if s := model.DidYouMean(v, names); s != "" {
				msg += fmt.Sprintf(": did you mean %q?", s)
			}
			c.errorf(child(at, "role"), "%s", msg)
			ok = false
		}
	} else {
		ok = false
	}
	sn := f["subjects"]
	if sn == nil || sn.Kind == yaml.SequenceNode && len(sn.Content) == 0 {
		c.errorf(child(at, "subjects"), "is empty; list who holds the role, e.g. - spiffeID: spiffe://keyway.local/operator, - cn: ci-bot or - %s: <digest>", tokenField)
		return b, false
	}
	if sn.Kind != yaml.SequenceNode {
		c.errorf(child(at, "subjects"), "must be a list of subjects, each with one of %s, %s", strings.Join(identity.Fields(), ", "), tokenField)
		return b, false
	}
	for j, s := range sn.Content {
		if !c.subject(fmt.Sprintf("%s.subjects[%d]", at, j), s, &b) {
			ok = false
		}
	}
	return b, ok
}

// subject reads one subject into b.
func (c *parser) subject(at string, node *yaml.Node, b *binding) bool {
	known := append(identity.Fields(), tokenField)
	f := c.fields(at, node, known...)
	if f == nil {
		return false
	}
	if len(f) == 0 {
		if len(node.Content) == 0 {
			c.errorf(at, "the subject is empty; set exactly one of %s", strings.Join(known, ", "))
		}
		return false
	}
	if len(f) > 1 {
		var set []string
		for _, k := range known {
			if f[k] != nil {
				set = append(set, k)
			}
		}
		c.errorf(at, "the subject sets %s; a subject names one property: split it into one subject per field (subjects are alternatives)", strings.Join(set, " and "))
		return false
	}
	for key, vn := range f {
		v, ok := c.scalar(child(at, key), vn)
		if !ok {
			return false
		}
		if key == tokenField {
			d, problem := parseTokenDigest(v)
			if problem != "" {
				c.errorf(child(at, key), "%s; %s", problem, tokenHint)
				return false
			}
			b.tokens = append(b.tokens, d)
			return true
		}
		pr := &policyv1.IdentityRule{}
		switch key {
		case "spiffeID":
			pr.SpiffeId = v
		case "uri":
			pr.Uri = v
		case "dnsName":
			pr.DnsName = v
		case "cn":
			pr.Cn = v
		case "ou":
			pr.Ou = v
		case "spkiSHA256":
			pr.SpkiSha256 = v
		}
		rule, problems := identity.Parse(pr)
		for _, p := range problems {
			path := at
			if p.Field != "" {
				path = child(at, p.Field)
			}
			c.errorf(path, "%s", p.Message)
		}
		if len(problems) > 0 {
			return false
		}
		b.rules = append(b.rules, rule)
	}
	return true
}

// parseTokenDigest decodes 64 hex digits, or says what is wrong.
func parseTokenDigest(v string) ([sha256.Size]byte, string) {
	var d [sha256.Size]byte
	v = strings.TrimSpace(v)
	if len(v) != 2*sha256.Size {
		return d, fmt.Sprintf("is %d characters long, not the 64 hex digits of a SHA-256", len(v))
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return d, "is not hexadecimal"
	}
	copy(d[:], b)
	return d, ""
}

// TokenDigest is the hex SHA-256 of a bearer token, as the access policy
// lists it.
func TokenDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// CertificateRoles are the roles the policy binds to a verified client
// certificate: those of every binding with a subject that matches it.
func (p *Policy) CertificateRoles(leaf *x509.Certificate) []Role {
	set := make(map[Role]bool)
	for _, b := range p.bindings {
		for _, r := range b.rules {
			if r.Matches(leaf) {
				set[b.role] = true
				break
			}
		}
	}
	return sortRoles(set)
}

// TokenRoles are the roles bound to a bearer token, and whether the policy
// lists the token at all. Digests are compared in constant time, all of
// them, so that the time taken says nothing about which one matched.
func (p *Policy) TokenRoles(token string) ([]Role, bool) {
	sum := sha256.Sum256([]byte(token))
	set := make(map[Role]bool)
	known := false
	for _, b := range p.bindings {
		for _, d := range b.tokens {
			if subtle.ConstantTimeCompare(sum[:], d[:]) == 1 {
				set[b.role] = true
				known = true
			}
		}
	}
	return sortRoles(set), known
}

// Bindings is how many bindings the policy holds, for logs.
func (p *Policy) Bindings() int { return len(p.bindings) }

func roleList() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// bounded is at most 64 characters of a value, for messages.
func bounded(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return string(bytes.ToValidUTF8([]byte(s[:max]), nil)) + "…"
}
