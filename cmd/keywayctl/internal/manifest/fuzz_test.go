package manifest

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"keyway.dev/internal/fuzzseed"
)

// FuzzParse feeds the manifest reader arbitrary YAML and JSON, starting
// from the manifests of the documentation and the end-to-end tests. Whatever
// the input, Parse returns within a bounded time, every problem is an
// [*Error] whose message quotes at most a prefix of a value, and what it
// accepts survives a round trip: printed as protojson (as `keywayctl get -o
// json` prints it) and read again, each resource is the same.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzseed.Blocks(f, "yaml", "apiVersion:", "docs/**/*.md", "README.md") {
		f.Add("docs.yaml", []byte(s))
	}
	for _, s := range fuzzseed.GoStrings(f, "apiVersion: keyway.dev", "tests/e2e/*.go", "cmd/keywayctl/internal/manifest/*_test.go") {
		f.Add("e2e.yaml", []byte(s))
	}
	for _, b := range fuzzseed.Files(f, "cmd/keywayctl/internal/apigee/testdata/*.golden.yaml") {
		f.Add("apigee.yaml", b)
	}
	// YAML refuses implicit keys over 1024 characters: keys are 1000 long.
	long, key := fuzzseed.Long(4096), fuzzseed.Long(1000)
	f.Add("long.yaml", []byte("apiVersion: keyway.dev/v1alpha1\nkind: "+long+"\n"))
	f.Add("long.yaml", []byte("apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {"+key+": 1}\n"))
	f.Add("long.yaml", []byte("apiVersion: keyway.dev/v1alpha1\nkind: Service\nspec: {address: ["+long+"]}\n"))
	f.Add("long.json", []byte(`{"apiVersion": "`+long+`", "kind": "Route"}`))
	f.Add("alias.yaml", []byte("a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\nkind: Service\napiVersion: keyway.dev/v1alpha1\nspec: {endpoints: *c}\n"))

	f.Fuzz(func(t *testing.T, name string, data []byte) {
		var (
			docs []*Document
			err  error
		)
		fuzzseed.Within(t, func() { docs, err = Parse(name, data) })
		fuzzseed.CheckError(t, err)
		if err != nil {
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					if _, ok := errors.AsType[*Error](e); !ok {
						t.Fatalf("a problem is a %T, not a *manifest.Error with a position: %v", e, e)
					}
				}
			}
			return
		}
		for i, d := range docs {
			if d.Resource.GetKind() == nil {
				t.Fatalf("document %d was accepted without a resource", i)
			}
			_ = d.Locate("spec.config.ciphers[1]")
			out, err := protojson.Marshal(d.Resource)
			if err != nil {
				t.Fatalf("document %d does not print as JSON: %v", i, err)
			}
			back, err := Parse("back.json", out)
			if err != nil {
				t.Fatalf("document %d, printed as JSON, does not read back: %v\n%s", i, err, out)
			}
			if len(back) != 1 || !proto.Equal(back[0].Resource, d.Resource) {
				t.Fatalf("document %d changed in a round trip through JSON:\n%s", i, out)
			}
		}
	})
}
