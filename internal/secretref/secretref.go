// Package secretref names the secrets the secrets service holds (an alias
// of a keystore, or a truststore) and is the contract of the services that
// refer to them: one rule for names, one string form for people, one key
// form for the versions bucket, and the [Secrets] interface through which
// validation asks about references.
//
// It holds no key material and fetches none: that is package material.
package secretref

import (
	"errors"
	"fmt"

	"keyway.dev/internal/limits"
)

// Ref names a secret: a keystore and alias (a key pair), or a truststore
// (a CA bundle).
type Ref struct {
	Keystore   string
	Alias      string
	Truststore string
}

// Kinds of secrets, as [Ref.Kind] reports them and as the API names them.
const (
	KindAlias      = "alias"
	KindTruststore = "truststore"
)

// String is the reference as the API, status pages and logs show it:
// "alias/<keystore>/<alias>" or "truststore/<name>".
func (r Ref) String() string { return r.Kind() + "/" + r.Name() }

// Kind is "alias" or "truststore".
func (r Ref) Kind() string {
	if r.Truststore != "" {
		return KindTruststore
	}
	return KindAlias
}

// Name is the secret's name within its kind: "<keystore>/<alias>" or the
// truststore's name. Messages print it after the kind ("alias edge/gw"),
// and audit records store it next to the kind.
func (r Ref) Name() string {
	if r.Truststore != "" {
		return r.Truststore
	}
	return r.Keystore + "/" + r.Alias
}

// maxNameLen bounds keystore, alias and truststore names.
const maxNameLen = limits.SecretNameBytes

// NameRule is what keystore, alias and truststore names may be: they become
// NATS KV key tokens ("alias.<keystore>.<alias>") and Vault path segments,
// so no dots and no slashes.
const NameRule = "letters, digits, hyphens and underscores, at most 64 characters"

// InvalidRune returns the first rune of name that [NameRule] does not allow.
func InvalidRune(name string) (rune, bool) {
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return r, true
		}
	}
	return 0, false
}

// CheckName reports what is wrong with a keystore, alias or truststore
// name, or nil. The message follows the name's field ("keystore name is
// empty; names are …").
func CheckName(name string) error {
	const rule = "names are " + NameRule
	if name == "" {
		return errors.New("is empty; " + rule)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%s is %d characters long; %s", limits.Quote(name), len(name), rule)
	}
	if r, bad := InvalidRune(name); bad {
		return fmt.Errorf("%s holds %q; %s", limits.Quote(name), r, rule)
	}
	return nil
}

// NameProblem says what is wrong with the name of what ("keystore",
// "alias", "truststore"), as a sentence that starts with what; "" when the
// name is good.
func NameProblem(what, name string) string {
	if name == "" {
		return fmt.Sprintf("%s is empty; give the %s's name (%s)", what, what, NameRule)
	}
	if len(name) > maxNameLen {
		return fmt.Sprintf("%s %q is %d characters long; names are %s", what, name, len(name), NameRule)
	}
	if r, bad := InvalidRune(name); bad {
		return fmt.Sprintf("%s %q has the character %q; names are %s", what, name, r, NameRule)
	}
	return ""
}
