package localrun

import "testing"

func TestRewriter(t *testing.T) {
	t.Parallel()
	r := newRewriter()
	r.hostPort("nats", 4222, "127.0.0.1:1001")
	r.hostPort("nats-0.nats-headless", 6222, "127.0.0.1:1002")
	r.hostPort("0.0.0.0", 8200, "127.0.0.1:1003")
	r.mount("/tmp", "/tmp/run/vault-0/volumes/tmp")
	r.mount("/vault/data", "/tmp/run/vault-0/volumes/data")
	r.mount("/etc/keyway/vault", "/tmp/run/p/volumes/vault-ca")
	for _, tc := range []struct{ name, in, want string }{
		{"a Service URL", "--nats=tls://nats:4222", "--nats=tls://127.0.0.1:1001"},
		{"a pod under its headless Service", "routes: [nats://nats-0.nats-headless:6222]", "routes: [nats://127.0.0.1:1002]"},
		{"the tail of a longer name is not the Service", "tls://my-nats:4222 nats:42220", "tls://my-nats:4222 nats:42220"},
		{"a wildcard bind", `address = "0.0.0.0:8200"`, `address = "127.0.0.1:1003"`},
		{"a mount path where a path begins", `path = "/vault/data"`, `path = "/tmp/run/vault-0/volumes/data"`},
		{"a folder under a mount path is not rewritten again", "/tmp/x -config=/tmp/a", "/tmp/run/vault-0/volumes/tmp/x -config=/tmp/run/vault-0/volumes/tmp/a"},
		{"a longer path that shares the prefix is not the mount", "/etc/keyway/vault-approle/role-id /etc/keyway/vault/ca.crt", "/etc/keyway/vault-approle/role-id /tmp/run/p/volumes/vault-ca/ca.crt"},
	} {
		if got := r.apply(tc.in); got != tc.want {
			t.Errorf("%s: apply(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

// compose's mapping: a loopback address per container, names before a port.
func TestRewriterNames(t *testing.T) {
	t.Parallel()
	r := newRewriter()
	r.name("secrets", "127.9.9.2")
	r.addr("0.0.0.0", "127.9.9.1")
	r.addr("127.0.0.1", "127.9.9.1")
	for in, want := range map[string]string{
		"--secrets-internal-url=https://secrets:8092": "--secrets-internal-url=https://127.9.9.2:8092",
		"--nats-user=secrets":                         "--nats-user=secrets",
		"/run/secrets/nats-secrets-password":          "/run/secrets/nats-secrets-password",
		"-a 0.0.0.0":                                  "-a 127.9.9.1",
		"http: 127.0.0.1:8222":                        "http: 127.9.9.1:8222",
	} {
		if got := r.apply(in); got != want {
			t.Errorf("apply(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExpandEnv(t *testing.T) {
	t.Parallel()
	defined := map[string]string{"POD_NAME": "vault-1"}
	for in, want := range map[string]string{
		"https://$(POD_NAME).vault-internal:8200": "https://vault-1.vault-internal:8200",
		"$(UNDEFINED) stays":                      "$(UNDEFINED) stays",
		"$$(POD_NAME) is escaped":                 "$(POD_NAME) is escaped",
	} {
		if got := expandEnv(in, defined); got != want {
			t.Errorf("expandEnv(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRepository(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"keyway/keyway-proxy:0.1.0":       "keyway/keyway-proxy",
		"nats:2.11-alpine":                "nats",
		"registry:5000/hashicorp/vault":   "registry:5000/hashicorp/vault",
		"hashicorp/vault@sha256:abcdef01": "hashicorp/vault",
	} {
		if got := repository(in); got != want {
			t.Errorf("repository(%q) = %q, want %q", in, got, want)
		}
	}
}
