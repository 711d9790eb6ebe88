package stack

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"keyway.dev/internal/ctlconfig"
)

func TestWriteContext(t *testing.T) {
	t.Parallel()
	cfg := Config{PolicyAddr: "127.0.0.1:8081", SecretsAddr: "127.0.0.1:8082"}
	want := ctlconfig.Context{Name: "keyway-dev", Server: "https://127.0.0.1:8081", SecretsServer: "https://127.0.0.1:8082",
		CA: "/data/pki/api-ca.crt", Cert: "/data/pki/operator.crt", Key: "/data/pki/operator.key"}

	t.Run("first context becomes current", func(t *testing.T) {
		t.Parallel()
		cfg := cfg
		cfg.KeywayctlConfig = filepath.Join(t.TempDir(), ".config", "keyway", "config.yaml")
		note, args, err := writeContext(cfg, "/data")
		if err != nil {
			t.Fatal(err)
		}
		if len(args) == 0 {
			t.Error("no keywayctl flags for the context")
		}
		if !strings.Contains(note, "wrote context keyway-dev to "+cfg.KeywayctlConfig+"; it is the current context") {
			t.Errorf("banner line %q", note)
		}
		c, err := ctlconfig.Load(cfg.KeywayctlConfig)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := c.Context("keyway-dev"); got != want || c.CurrentContext != "keyway-dev" {
			t.Errorf("wrote %+v (current %q), want %+v", got, c.CurrentContext, want)
		}
		if st, _ := os.Stat(cfg.KeywayctlConfig); st.Mode().Perm() != 0o600 {
			t.Errorf("mode %o, want 600", st.Mode().Perm())
		}
	})

	t.Run("the user's current context stands", func(t *testing.T) {
		t.Parallel()
		cfg := cfg
		cfg.KeywayctlConfig = filepath.Join(t.TempDir(), "config.yaml")
		prod := ctlconfig.Context{Name: "prod", Server: "https://policy.example.com", TokenFile: "/t"}
		if _, err := ctlconfig.Upsert(cfg.KeywayctlConfig, prod, true); err != nil {
			t.Fatal(err)
		}
		// An older keyway-dev (another data folder) is replaced.
		if _, err := ctlconfig.Upsert(cfg.KeywayctlConfig, ctlconfig.Context{Name: "keyway-dev", Server: "https://127.0.0.1:1"}, false); err != nil {
			t.Fatal(err)
		}
		note, args, err := writeContext(cfg, "/data")
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"--keywayconfig", cfg.KeywayctlConfig, "--context", "keyway-dev"}; !slices.Equal(args, want) {
			t.Errorf("keywayctl flags %q, want %q", args, want)
		}
		if !strings.Contains(note, "the current context stays prod (keywayctl config use-context keyway-dev") {
			t.Errorf("banner line %q", note)
		}
		c, err := ctlconfig.Load(cfg.KeywayctlConfig)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := c.Context("keyway-dev")
		if kept, _ := c.Context("prod"); kept != prod || got != want || c.CurrentContext != "prod" || len(c.Contexts) != 2 {
			t.Errorf("file after writing: %+v", c)
		}
	})

	t.Run("none asked", func(t *testing.T) {
		t.Parallel()
		if note, args, err := writeContext(cfg, "/data"); note != "" || args != nil || err != nil {
			t.Errorf("writeContext without a file: %q, %q, %v", note, args, err)
		}
	})
}
