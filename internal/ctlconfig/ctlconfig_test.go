package ctlconfig

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"keyway.dev/internal/fuzzseed"
)

const example = `currentContext: keyway-dev
contexts:
  - name: keyway-dev
    server: https://127.0.0.1:8081
    secretsServer: https://127.0.0.1:8082
    ca: /abs/.keyway/pki/api-ca.crt
    cert: /abs/.keyway/pki/operator.crt
    key: /abs/.keyway/pki/operator.key
  - name: ci
    server: https://keyway.example.com
    token: s3cr3t-token
`

func write(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadExample(t *testing.T) {
	t.Parallel()
	c, err := Load(write(t, example))
	if err != nil {
		t.Fatal(err)
	}
	if c.CurrentContext != "keyway-dev" || len(c.Contexts) != 2 {
		t.Fatalf("got %+v", c)
	}
	dev, err := c.Context("keyway-dev")
	if err != nil {
		t.Fatal(err)
	}
	want := Context{Name: "keyway-dev", Server: "https://127.0.0.1:8081", SecretsServer: "https://127.0.0.1:8082",
		CA: "/abs/.keyway/pki/api-ca.crt", Cert: "/abs/.keyway/pki/operator.crt", Key: "/abs/.keyway/pki/operator.key"}
	if dev != want {
		t.Errorf("keyway-dev = %+v\nwant %+v", dev, want)
	}
	if got := dev.Auth(); got != "client certificate" {
		t.Errorf("Auth = %q", got)
	}
	ci, _ := c.Context("ci")
	if ci.Auth() != "token" || ci.Redacted().Token != Redacted || ci.Token != "s3cr3t-token" {
		t.Errorf("ci: auth %q, redacted %q", ci.Auth(), ci.Redacted().Token)
	}
}

// Every problem is reported, each naming the file, the line, the field
// and the fix.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		content string
		want    []string // each a substring of one line of the error
	}{
		{"unknown top-level field", "currentContext: a\ncontext: []\n",
			[]string{`:2: "context": unknown field; the fields are currentContext, contexts`}},
		{"misspelt context field", "contexts:\n  - name: a\n    serverr: https://x\n",
			[]string{`:3: contexts[0]."serverr": unknown field; the fields are name, server, secretsServer, ca, cert, key, token, tokenFile`}},
		{"not a mapping", "- a\n- b\n", []string{`:1: want a mapping with currentContext and contexts`}},
		{"contexts not a list", "contexts: {name: a}\n", []string{"cannot unmarshal !!map into []ctlconfig.Context"}},
		{"not YAML", "contexts: [\n", []string{"not YAML"}},
		{"missing name", "contexts:\n  - server: https://x\n", []string{`:2: contexts[0].name: missing; give the context a name`}},
		{"duplicate name", "contexts:\n  - name: a\n  - name: a\n", []string{`:3: contexts[1].name: "a" is also contexts[0]'s name; rename or delete one of them`}},
		{"bad name", "contexts:\n  - name: a b\n", []string{`contexts[0].name: "a b": a name is letters, digits and . _ - @ : / only`}},
		{"long name is quoted short", "contexts:\n  - name: " + strings.Repeat("n", 300) + "\n",
			[]string{`contexts[0].name: "` + strings.Repeat("n", 64) + `"… (300 bytes) is longer than 253 bytes`}},
		{"bad server", "contexts:\n  - name: a\n    server: 127.0.0.1:8081\n    secretsServer: ftp://x\n", []string{
			`:3: contexts[0].server: "127.0.0.1:8081": want an https:// (or http://) URL, such as https://127.0.0.1:8081`,
			`:4: contexts[0].secretsServer: "ftp://x": want an https:// (or http://) URL, such as https://127.0.0.1:8082`}},
		{"cert without key", "contexts:\n  - name: a\n    cert: /c.crt\n", []string{`:2: contexts[0].key: missing: cert is set, so key must name its private key file`}},
		{"key without cert", "contexts:\n  - name: a\n    key: /c.key\n", []string{`contexts[0].cert: missing: key is set`}},
		{"token and tokenFile", "contexts:\n  - name: a\n    token: t\n    tokenFile: /t\n", []string{`:3: contexts[0].token: both token and tokenFile are set; keep one`}},
		{"token with a newline", "contexts:\n  - name: a\n    token: \"t\\r\\nX-Evil: 1\"\n", []string{`contexts[0].token: holds a space or a control character`}},
		{"all at once", "contexts:\n  - name: a\n    cert: /c\n  - name: a\n    server: x\n", []string{
			`contexts[0].key: missing`, `contexts[1].name: "a" is also`, `contexts[1].server: "x": want`}},
		{"unknown fields and invalid values at once", "contexts:\n  - name: a\n    server: x\n    cert: /c\n    bogus: 1\n", []string{
			`:2: contexts[0].key: missing`, `:3: contexts[0].server: "x": want`, `:5: contexts[0]."bogus": unknown field`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := write(t, tc.content)
			_, err := Load(path)
			if err == nil {
				t.Fatal("loaded")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Errorf("got %d errors, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for _, w := range tc.want {
				found := false
				for _, l := range lines {
					found = found || (strings.HasPrefix(l, path) && strings.Contains(l, w))
				}
				if !found {
					t.Errorf("no error line starting with the file and holding %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadBounded(t *testing.T) {
	t.Parallel()
	path := write(t, "contexts: []\n#"+strings.Repeat("x", MaxFileSize))
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), "more than the 1048576 a keywayctl config may have") || !strings.HasPrefix(err.Error(), path) {
		t.Errorf("Load of a file over the limit: %v", err)
	}
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load of a folder: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestEmptyFile(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"", "# nothing yet\n", "null\n"} {
		c, err := Load(write(t, content))
		if err != nil || len(c.Contexts) != 0 {
			t.Errorf("Load(%q) = %+v, %v", content, c, err)
		}
	}
}

func TestContextNotFound(t *testing.T) {
	t.Parallel()
	path := write(t, example)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Context("prod")
	want := `no context "prod" in ` + path + `; the contexts are keyway-dev, ci`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
	_, err = (&Config{}).Context("prod")
	if err == nil || !strings.Contains(err.Error(), "has no contexts; make one with keywayctl config set-context prod --server URL") {
		t.Errorf("empty config: %v", err)
	}
}

func TestDefaultPath(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name, want, err string
		env             map[string]string
	}{
		{name: "KEYWAYCONFIG wins", env: map[string]string{"KEYWAYCONFIG": "/x/c.yaml", "HOME": "/home/u"}, want: "/x/c.yaml"},
		{name: "home", env: map[string]string{"HOME": "/home/u"}, want: "/home/u/.config/keyway/config.yaml"},
		{name: "neither", env: map[string]string{}, err: "neither KEYWAYCONFIG nor HOME is set"},
	} {
		got, err := DefaultPath(env(tc.env))
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: got %q, %v; want %q, %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	x := Context{Name: "a", CA: "pki/ca.crt", Cert: "/abs/op.crt", Key: "op.key", TokenFile: "../t"}.Resolve("/home/u/.config/keyway")
	want := Context{Name: "a", CA: "/home/u/.config/keyway/pki/ca.crt", Cert: "/abs/op.crt", Key: "/home/u/.config/keyway/op.key", TokenFile: "/home/u/.config/t"}
	if x != want {
		t.Errorf("Resolve = %+v\nwant %+v", x, want)
	}
}

// Save writes mode 0600 (also over a file that was more open), and what
// it writes loads back the same.
func TestSaveMode(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "new", "keyway")
	path := filepath.Join(dir, "config.yaml")
	c, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(path, c); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Save(path, c); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{path: 0o600, dir: 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.CurrentContext != c.CurrentContext || len(back.Contexts) != 2 || back.Contexts[1] != c.Contexts[1] {
		t.Errorf("loaded back %+v\nsaved %+v", back, c)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the folder holds %d files, want the config alone (no temporary or lock file left)", len(entries))
	}
}

func TestSaveRefusesInvalid(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	err := Save(path, &Config{Contexts: []Context{{Name: "a", Cert: "/c"}}})
	if err == nil || !strings.Contains(err.Error(), "contexts[0].key: missing") {
		t.Errorf("Save of an invalid config: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an invalid config was written: %v", err)
	}
}

// Save through a symbolic link replaces the file it points at and keeps
// the link, as dotfile managers expect.
func TestSaveFollowsLink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	real := filepath.Join(dir, "dotfiles-config.yaml")
	if err := os.WriteFile(real, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Upsert(link, Context{Name: "new", Server: "https://n"}, false); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v", err)
	}
	c, err := Load(real)
	if err != nil || len(c.Contexts) != 3 {
		t.Errorf("the linked file: %+v, %v", c, err)
	}
}

// Upsert merges: it replaces its own context, keeps the others, and
// selects its context only when none is current (or when asked to).
func TestUpsert(t *testing.T) {
	t.Parallel()
	t.Run("new file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "keyway", "config.yaml")
		cur, err := Upsert(path, Context{Name: "keyway-dev", Server: "https://127.0.0.1:8081"}, false)
		if err != nil || cur != "keyway-dev" {
			t.Fatalf("Upsert = %q, %v", cur, err)
		}
		c, err := Load(path)
		if err != nil || c.CurrentContext != "keyway-dev" || len(c.Contexts) != 1 {
			t.Errorf("file: %+v, %v", c, err)
		}
	})
	t.Run("existing file", func(t *testing.T) {
		t.Parallel()
		path := write(t, strings.Replace(example, "currentContext: keyway-dev", "currentContext: ci", 1))
		dev := Context{Name: "keyway-dev", Server: "https://127.0.0.1:9081", CA: "/new/ca.crt"}
		cur, err := Upsert(path, dev, false)
		if err != nil || cur != "ci" {
			t.Fatalf("Upsert = %q, %v; want current ci kept", cur, err)
		}
		c, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := c.Context("keyway-dev"); got != dev {
			t.Errorf("keyway-dev = %+v, want %+v (replaced whole)", got, dev)
		}
		if ci, _ := c.Context("ci"); ci.Token != "s3cr3t-token" || len(c.Contexts) != 2 {
			t.Errorf("the other context was not kept: %+v", c.Contexts)
		}
		if cur, err := Upsert(path, dev, true); err != nil || cur != "keyway-dev" {
			t.Errorf("Upsert makeCurrent = %q, %v", cur, err)
		}
	})
	t.Run("broken file is left alone", func(t *testing.T) {
		t.Parallel()
		broken := "contexts:\n  - name: a\n    serverr: x\n"
		path := write(t, broken)
		if _, err := Upsert(path, Context{Name: "keyway-dev"}, false); err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("Upsert into a broken file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != broken {
			t.Errorf("the broken file was changed to %q", b)
		}
	})
}

// Concurrent writers each keep their change: the lock serialises them.
func TestUpdateConcurrent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "config.yaml")
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := Upsert(path, Context{Name: "c" + string(rune('a'+i))}, false)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := Load(path)
	if err != nil || len(c.Contexts) != n {
		t.Errorf("after %d concurrent upserts: %d contexts, %v", n, len(c.Contexts), err)
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("keyway-dev"); err != nil {
		t.Fatal(err)
	}
	if c.CurrentContext != "" || len(c.Contexts) != 1 || c.Contexts[0].Name != "ci" {
		t.Errorf("after delete: %+v", c)
	}
	if err := c.Delete("keyway-dev"); err == nil || !strings.Contains(err.Error(), "the contexts are ci") {
		t.Errorf("second delete: %v", err)
	}
}

// FuzzParse feeds keywayctl's config reader arbitrary YAML, starting from
// the documented example. Properties: bounded time; no error line quotes
// more than a prefix of a value; what parses saves and parses back the same.
func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("contexts:\n  - name: a\n    cert: /c\n"))
	f.Add([]byte("currentContext: [x]\n"))
	for _, s := range fuzzseed.Blocks(f, "yaml", "contexts:", "docs/**/*.md") {
		f.Add([]byte(s))
	}
	// YAML refuses implicit keys over 1024 characters: keys are 1000 long.
	long, key := fuzzseed.Long(4096), fuzzseed.Long(1000)
	f.Add([]byte("currentContext: " + long + "\ncontexts:\n  - name: " + long + "\n    server: " + long + "\n    " + key + ": x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			c   *Config
			err error
		)
		fuzzseed.Within(t, func() { c, err = Parse(data) })
		fuzzseed.CheckError(t, err)
		if err != nil {
			return
		}
		// What parses saves and parses back the same.
		out, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("a valid config does not parse back: %v\n%s", err, out)
		}
		if len(back.Contexts) != len(c.Contexts) || back.CurrentContext != c.CurrentContext {
			t.Fatalf("round trip changed %+v into %+v", c, back)
		}
	})
}
