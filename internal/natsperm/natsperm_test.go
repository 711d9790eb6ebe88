package natsperm_test

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"keyway.dev/internal/natsperm"
)

var update = flag.Bool("update", false, "rewrite the users block of deploy/'s NATS configurations")

// deploy/'s NATS configurations carry the block Render makes, between these
// lines.
const (
	begin = "# BEGIN users: generated from keyway.dev/internal/natsperm (cd internal && go test ./natsperm -update)\n"
	end   = "# END users\n"
)

func TestDeployConfigurationsGrantWhatNatspermSays(t *testing.T) {
	want := natsperm.Render(natsperm.Users(natsperm.Buckets{}), natsperm.EnvPassword)
	for _, p := range []string{"deploy/nats/nats-server.conf", "deploy/kubernetes/nats/nats-server.conf"} {
		t.Run(p, func(t *testing.T) {
			file := filepath.Join("..", "..", filepath.FromSlash(p))
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			i, j := strings.Index(s, begin), strings.Index(s, end)
			if i < 0 || j < i {
				t.Fatalf("%s has no %q … %q block", p, strings.TrimSpace(begin), strings.TrimSpace(end))
			}
			got := s[i+len(begin) : j]
			if got == want {
				return
			}
			if *update {
				if err := os.WriteFile(file, []byte(s[:i+len(begin)]+want+s[j:]), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			t.Errorf("%s grants other permissions than natsperm.Users: run `go test ./natsperm -update` in internal\n--- got\n%s\n--- want\n%s", p, got, want)
		})
	}
}

func TestUsers(t *testing.T) {
	users := natsperm.Users(natsperm.Buckets{})
	byName := map[string]natsperm.User{}
	for _, u := range users {
		byName[u.Name] = u
	}
	// What the design note promises, subject by subject: who writes which
	// bucket, who creates which stream, and each user's own inbox.
	for _, tc := range []struct {
		user, subject string
		allowed       bool
	}{
		{natsperm.Policy, "$KV.keyway-config.>", true},
		{natsperm.Policy, "$KV.keyway-secret-versions.>", false},
		{natsperm.Policy, "$KV.keyway-nodes.>", false},
		{natsperm.Policy, "$JS.API.STREAM.CREATE.keyway-audit", true},
		{natsperm.Policy, "keyway.audit.>", true},
		{natsperm.Secrets, "$KV.keyway-secret-versions.>", true},
		{natsperm.Secrets, "$KV.keyway-config.>", false},
		// The PKI leader lease: created, refreshed, watched, released.
		{natsperm.Secrets, "$KV.keyway-secrets-leader.>", true},
		{natsperm.Secrets, "$JS.API.STREAM.CREATE.KV_keyway-secrets-leader", true},
		{natsperm.Secrets, "$JS.API.CONSUMER.CREATE.KV_keyway-secrets-leader.>", true},
		{natsperm.Policy, "$KV.keyway-secrets-leader.>", false},
		{natsperm.Node, "$KV.keyway-secrets-leader.>", false},
		// The secrets service reads the configuration (which resources
		// use a secret), and never writes or reconfigures it.
		{natsperm.Secrets, "$JS.API.STREAM.INFO.KV_keyway-config", true},
		{natsperm.Secrets, "$JS.API.CONSUMER.CREATE.KV_keyway-config.>", true},
		{natsperm.Secrets, "$JS.API.STREAM.UPDATE.KV_keyway-config", false},
		{natsperm.Secrets, "$JS.API.STREAM.CREATE.KV_keyway-config", false},
		{natsperm.Secrets, "keyway.audit.>", true},
		{natsperm.Node, "$KV.keyway-nodes.>", true},
		{natsperm.Node, "$KV.keyway-config.>", false},
		{natsperm.Node, "$KV.keyway-secret-versions.>", false},
		{natsperm.Node, "$JS.API.STREAM.UPDATE.KV_keyway-config", false},
		{natsperm.Node, "$JS.API.CONSUMER.CREATE.KV_keyway-nodes.>", false},
		{natsperm.Node, "$JS.API.CONSUMER.CREATE.KV_keyway-config.>", true},
		{natsperm.Node, "keyway.audit.>", false},
		// Expiry events: the nodes publish them, and the policy and
		// secrets services for their own certificates, on that subject
		// only.
		{natsperm.Node, "keyway.events.cert.expiring", true},
		{natsperm.Node, "keyway.events.>", false},
		{natsperm.Policy, "keyway.events.cert.expiring", true},
		{natsperm.Policy, "keyway.events.>", false},
		{natsperm.Secrets, "keyway.events.cert.expiring", true},
		{natsperm.Secrets, "keyway.events.>", false},
	} {
		if got := slices.Contains(byName[tc.user].Publish, tc.subject); got != tc.allowed {
			t.Errorf("%s may publish to %s: %v, want %v", tc.user, tc.subject, got, tc.allowed)
		}
	}
	for _, u := range users {
		if want := []string{"_INBOX." + u.Name + ".>"}; !slices.Equal(u.Subscribe, want) {
			t.Errorf("%s subscribes to %v, want only %v", u.Name, u.Subscribe, want)
		}
		for _, s := range u.Publish {
			if s == ">" || strings.HasPrefix(s, "$JS.API.>") || s == "$KV.>" {
				t.Errorf("%s may publish to %s: a wildcard over every bucket", u.Name, s)
			}
		}
	}
}

func TestBucketsFollowTheFlags(t *testing.T) {
	users := natsperm.Users(natsperm.Buckets{Config: "staging-config", Nodes: "staging-nodes", SecretVersions: "staging-versions"})
	joined := strings.Join(users[0].Publish, " ")
	for _, want := range []string{"$KV.staging-config.>", "$JS.API.STREAM.INFO.KV_staging-nodes", "$JS.API.DIRECT.GET.KV_staging-versions.>"} {
		if !strings.Contains(joined, want) {
			t.Errorf("policy's permissions for renamed buckets lack %s", want)
		}
	}
	if strings.Contains(joined, "keyway-config") {
		t.Errorf("policy's permissions for renamed buckets still name keyway-config")
	}
}

func TestRender(t *testing.T) {
	out := natsperm.Render([]natsperm.User{{Name: "u", Publish: []string{"$KV.b.>"}, Subscribe: []string{"_INBOX.u.>"}}}, natsperm.EnvPassword)
	for _, want := range []string{"authorization {", "user: u", "password: $NATS_U_PASSWORD", `"$KV.b.>"`, `"_INBOX.u.>"`} {
		if !strings.Contains(out, want) {
			t.Errorf("Render output lacks %q:\n%s", want, out)
		}
	}
}
