package app_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"

	"keyway.dev/internal/natstest"
	"keyway.dev/internal/secretref"
	"keyway.dev/internal/testwait"
	"keyway.dev/internal/vaulttest"
)

// issued is how many certificates a replica issued from Vault PKI.
func issued(t *testing.T, s *service) float64 {
	t.Helper()
	return max(metric(t, s, `keyway_secrets_pki_issued_total{result="ok"}`), 0)
}

// stop stops a service as SIGTERM does and waits until it has; the
// cleanup of start still sees how it ended.
func (s *service) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	err := <-s.done
	s.done <- err
	if err != nil {
		t.Errorf("service stopped with %v", err)
	}
}

// fetched is what a service's MaterialService serves for an alias, all
// from one answer: the version, the key and the leaf's subject.
type fetched struct{ version, key, subject string }

func fetch(t *testing.T, s *service, keystore, alias string) fetched {
	t.Helper()
	m, err := s.Material.FetchAlias(context.Background(), connect.NewRequest(&secretsv1.FetchAliasRequest{Keystore: keystore, Alias: alias}))
	if err != nil {
		return fetched{key: err.Error()}
	}
	f := fetched{version: m.Msg.GetAlias().GetVersion(), key: m.Msg.GetPrivateKeyPem()}
	if chain := m.Msg.GetAlias().GetChain(); len(chain) > 0 {
		f.subject = chain[0].GetSubject()
	}
	return f
}

// served is the version and key a service's MaterialService serves for
// an alias.
func served(t *testing.T, s *service, keystore, alias string) (string, string) {
	t.Helper()
	f := fetch(t, s, keystore, alias)
	return f.version, f.key
}

// Two replicas on one Vault and one NATS: one leader issues and renews,
// both serve the certificate stored in KV, and the other takes over when
// the leader stops.
func TestPKILeader(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t, vaulttest.Options{PKI: true})
	v.Role("gw", time.Hour)
	n := natstest.Start(t)
	cfg := vaultConfig(v)
	cfg.LeaderBucket, cfg.LeaderTTL = "keyway-secrets-leader", 3*time.Second
	replicas := []*service{startOn(t, cfg, n.URL), startOn(t, cfg, n.URL)}
	var lead, follow *service
	testwait.Until(t, 30*time.Second, "one replica to lead", func() bool {
		a, b := metric(t, replicas[0], "keyway_secrets_pki_leader"), metric(t, replicas[1], "keyway_secrets_pki_leader")
		switch {
		case a == 1 && b == 0:
			lead, follow = replicas[0], replicas[1]
		case a == 0 && b == 1:
			lead, follow = replicas[1], replicas[0]
		default:
			return false
		}
		return true
	})
	ctx := context.Background()

	// A put taken by the follower: it issues once and stores the
	// certificate with the binding; the leader serves the same one.
	// TTL 30s (Vault back-dates by 30s): renewed about 10s after issue.
	resp, err := follow.API.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw",
		Pki: &secretsv1.PKISpec{Role: "gw", CommonName: "gw.example.com", Ttl: durationpb.New(30 * time.Second)}}))
	if err != nil {
		t.Fatal(err)
	}
	first := resp.Msg.GetAlias().GetVersion()
	_, followKey := served(t, follow, "edge", "gw")
	testwait.Until(t, 10*time.Second, "the leader to serve the certificate the follower issued", func() bool {
		version, key := served(t, lead, "edge", "gw")
		return version == first && key == followKey
	})
	if got := issued(t, follow) + issued(t, lead); got != 1 {
		t.Errorf("%v certificates issued for one put; want 1", got)
	}

	// A binding written straight into KV, without a certificate: the
	// leader issues it, and the follower serves what it stored.
	vaultCLI(t, v, "kv", "put", "secret/keyway/keystores/edge/bound", "pki_role=gw", "common_name=bound.example.com", "ttl=1h", "usage=client")
	var boundVersion string
	testwait.Until(t, 30*time.Second, "both replicas to serve the certificate the leader issued for edge/bound", func() bool {
		lv, lk := served(t, lead, "edge", "bound")
		fv, fk := served(t, follow, "edge", "bound")
		boundVersion = lv
		return lv != "" && lv == fv && lk == fk
	})
	if got := issued(t, lead); got < 1 {
		t.Errorf("the leader counts %v issuances after issuing edge/bound", got)
	}
	// The binding changed in KV, its stored certificate kept: it no
	// longer matches the names, and the leader issues for the new ones.
	// Each replica's version and subject come from one answer: the
	// replicas move from the old certificate to the new one each at its
	// own poll, and a subject read after the version (in another call)
	// could belong to the new certificate while the version recorded is
	// still the old one's.
	vaultCLI(t, v, "kv", "patch", "secret/keyway/keystores/edge/bound", "common_name=renamed.example.com")
	testwait.Until(t, 30*time.Second, "both replicas to serve a certificate for the renamed binding", func() bool {
		l, f := fetch(t, lead, "edge", "bound"), fetch(t, follow, "edge", "bound")
		boundVersion = l.version
		return l.version != "" && l == f && f.subject == "CN=renamed.example.com"
	})

	// The renewal: the leader issues, both serve the new certificate.
	renewed := lead.Bucket.wait(t, "alias.edge.gw", func(e jetstream.KeyValueEntry, sv *secretsv1.SecretVersion) bool {
		return put(e) && sv.GetVersion() != first
	})
	testwait.Until(t, 10*time.Second, "both replicas to serve the renewed certificate", func() bool {
		lv, lk := served(t, lead, "edge", "gw")
		fv, fk := served(t, follow, "edge", "gw")
		return lv == renewed.GetVersion() && fv == lv && fk == lk
	})
	if got := issued(t, follow); got != 1 {
		t.Errorf("the follower issued %v certificates; want only the one of the put it took", got)
	}
	if v, _ := served(t, follow, "edge", "bound"); v != boundVersion {
		t.Errorf("the follower serves edge/bound version %s, then %s, without a renewal", boundVersion, v)
	}

	// The leader stops: the follower takes over and renews.
	issuedBefore, leadIssued := issued(t, follow), issued(t, lead)
	lead.stop(t)
	testwait.Until(t, 10*time.Second, "the follower to lead", func() bool { return metric(t, follow, "keyway_secrets_pki_leader") == 1 })
	var latest string
	testwait.Until(t, 60*time.Second, "the new leader to renew edge/gw", func() bool {
		latest, _ = served(t, follow, "edge", "gw")
		return issued(t, follow) > issuedBefore && latest != "" && latest != renewed.GetVersion() && latest != first
	})

	// Every version of edge/gw was published once, in order: the replicas
	// never published competing versions.
	var seq []string
	for _, b := range follow.Bucket.all() {
		sv, err := secretref.DecodeVersion(b)
		if err != nil || sv.GetAlias() != "gw" {
			continue
		}
		if len(seq) == 0 || seq[len(seq)-1] != sv.GetVersion() {
			seq = append(seq, sv.GetVersion())
		}
	}
	seen := map[string]bool{}
	for _, version := range seq {
		if seen[version] {
			t.Errorf("version %s of edge/gw was published again after another: %v", version, seq)
		}
		seen[version] = true
	}
	// Vault issued a certificate for each issuance the replicas counted
	// (and holds its CA's): none issued and thrown away.
	certs, err := v.Do(ctx, "LIST", "pki/certs", nil)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := certs["keys"].([]any)
	if total := issued(t, follow) + leadIssued; float64(len(keys)) != total+1 {
		t.Errorf("Vault lists %d certificates; the replicas counted %v issuances (and the CA's)", len(keys), total)
	}
	t.Logf("edge/gw versions published: %v; Vault lists %d certificates", seq, len(keys))
}
