package apigee_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"keyway.dev/keywayctl/internal/apigee"
)

var update = flag.Bool("update", false, "rewrite the golden files from the converter's output")

// golden is what a conversion gives: the YAML, then the notes as comments.
func golden(r *apigee.Result) string {
	var b strings.Builder
	b.Write(r.YAML)
	b.WriteString("# notes:\n")
	for _, n := range r.Notes {
		b.WriteString("# " + n + "\n")
	}
	return b.String()
}

func TestConvertGolden(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"targetservers", "wrapped"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := filepath.Join("testdata", name+".json")
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			r, err := apigee.Convert(name+".json", data)
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			got := golden(r)
			want := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(want, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			w, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if got != string(w) {
				t.Errorf("output differs from %s (run go test -update if the change is intended):\n%s", want, got)
			}
		})
	}
}

func TestConvertErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"empty", "  ", []string{"the file is empty"}},
		{"not JSON", "name: x", []string{"reading target servers"}},
		{"object without list", `{"servers": []}`, []string{`the object has no "targetServer" list`}},
		{"missing host and bad port", `[{"name": "a", "port": 70000}]`, []string{`targetServer[0] "a": host is missing`, `targetServer[0] "a": port "70000" is not a port number`}},
		{"TLS 1.0", `[{"name": "a", "host": "h", "port": 443, "sSLInfo": {"enabled": true, "trustStore": "t", "protocols": ["TLSv1", "TLSv1.2"]}}]`,
			[]string{`targetServer[0] "a" sSLInfo: protocols: "TLSv1" (TLS 1.0) is not supported by Keyway`}},
		{"client auth without keystore", `[{"name": "a", "host": "h", "port": 443, "sSLInfo": {"enabled": true, "clientAuthEnabled": true, "trustStore": "t"}}]`,
			[]string{"clientAuthEnabled is true but keyStore or keyAlias is missing"}},
		{"no truststore", `[{"name": "a", "host": "h", "port": 443, "sSLInfo": {"enabled": "true"}}]`,
			[]string{"trustStore is missing and ignoreValidationErrors is false"}},
		{"names collide", `[{"name": "Orders", "host": "h", "port": 1}, {"name": "orders", "host": "h", "port": 2}]`,
			[]string{`targetServer[1] "orders": becomes the Keyway name "orders", as target server "Orders" does`}},
		{"bad boolean", `[{"name": "a", "host": "h", "port": 1, "isEnabled": "yes please"}]`, []string{`isEnabled "yes please" is not true or false`}},
		{"nothing enabled", `[{"name": "a", "host": "h", "port": 1, "isEnabled": false}]`, []string{"no enabled target server to convert"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := apigee.Convert("ts.json", []byte(tc.in))
			if err == nil {
				t.Fatal("converted; want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
