package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"keyway.dev/internal/version"
)

// --version and `version` print the same line; -o json the same facts;
// none of them needs a policy service (the server here does not exist).
func TestVersion(t *testing.T) {
	want := version.String("keywayctl") + "\n"
	for _, args := range [][]string{{"--version"}, {"version"}, {"--server", "https://127.0.0.1:1", "version", "-o", "text"}} {
		out, errOut, err := keywayctl(t, "https://127.0.0.1:1", "", args...)
		if err != nil || out != want {
			t.Errorf("keywayctl %s = %q, %v (stderr %q), want %q", strings.Join(args, " "), out, err, errOut, want)
		}
	}
	out, _, err := keywayctl(t, "", "", "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got versionOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("version -o json: %v\n%s", err, out)
	}
	if got.Binary != "keywayctl" || got.Info != version.Get() {
		t.Errorf("version -o json = %+v, want binary keywayctl and %+v", got, version.Get())
	}
	if _, _, err := keywayctl(t, "", "", "version", "-o", "yaml"); err == nil || !strings.Contains(err.Error(), "want text or json") {
		t.Errorf("version -o yaml: %v, want an error naming the formats", err)
	}
}
