package access_test

import (
	"errors"
	"strings"
	"testing"

	"keyway.dev/internal/access"
	"keyway.dev/internal/fuzzseed"
	"keyway.dev/internal/testca"
)

// FuzzParsePolicy feeds the access policy reader (a file the operator
// writes, read by every service at start and on reload) arbitrary YAML and
// JSON, starting from the documented policies and the dev stack's.
// Properties: bounded time; every problem is a *ValidationError whose lines
// quote at most a prefix of a value; an accepted policy answers for any
// certificate and token, and parsing it again gives the same bindings.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range fuzzseed.Blocks(f, "yaml", "kind: AccessPolicy", "docs/**/*.md") {
		f.Add([]byte(s))
	}
	for _, s := range fuzzseed.GoStrings(f, "kind: AccessPolicy", "internal/access/*_test.go", "services/devstack/internal/stack/*.go", "tests/harness/*.go") {
		f.Add([]byte(s))
	}
	// YAML refuses implicit keys over 1024 characters: keys are 1000 long.
	long, key := fuzzseed.Long(4096), fuzzseed.Long(1000)
	f.Add([]byte("apiVersion: keyway.dev/v1alpha1\nkind: AccessPolicy\nspec:\n  bindings:\n    - role: " + long + "\n      subjects: [{" + key + ": x}, {cn: " + long + "}, {tokenSHA256: " + long + "}]\n"))
	f.Add([]byte("apiVersion: " + long + "\nkind: " + long + "\nmetadata: {name: " + long + "}\n" + key + ": 1\n"))

	leaf := testca.New(f, "fuzz CA").Client("ci-bot").TLS.Leaf
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			p   *access.Policy
			err error
		)
		fuzzseed.Within(t, func() { p, err = access.ParsePolicy(data) })
		fuzzseed.CheckError(t, err)
		if err != nil {
			if _, ok := errors.AsType[*access.ValidationError](err); !ok {
				t.Fatalf("the error is a %T, not a *access.ValidationError: %v", err, err)
			}
			return
		}
		_ = p.CertificateRoles(leaf)
		_, _ = p.TokenRoles("s3cret-token")
		again, err := access.ParsePolicy(data)
		if err != nil || again.Bindings() != p.Bindings() {
			t.Fatalf("the same policy parsed twice differs: %v", err)
		}
		if p.Bindings() > strings.Count(string(data), "role") {
			t.Fatalf("%d bindings from a text naming a role %d times", p.Bindings(), strings.Count(string(data), "role"))
		}
	})
}
