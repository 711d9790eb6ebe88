package fleetcerts

import (
	"cmp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "keyway.dev/gen/keyway/node/v1"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func node(id string, certs ...*nodev1.ServedCertificate) *nodev1.NodeStatus {
	return &nodev1.NodeStatus{Id: id, Certificates: certs}
}

func served(scope, name, host, role, fp string, left time.Duration) *nodev1.ServedCertificate {
	return &nodev1.ServedCertificate{Scope: scope, Name: name, Host: host, Role: role, Sha256Fingerprint: fp,
		NotAfter: timestamppb.New(now.Add(left)), Subject: "CN=" + name, Issuer: "CN=Edge CA", Sans: []string{host, "spiffe://example.org/" + name}}
}

// TestJoin: the nodes' reports join into one entry per certificate,
// soonest to expire first, with where each comes from, where it is used
// and on which nodes.
func TestJoin(t *testing.T) {
	t.Parallel()
	web := served("listener", "public", "api.example.com", "server", "aa:aa:aa:aa:aa:aa:aa:aa:aa:aa", 10*24*time.Hour)
	web.Keystore, web.Alias = "edge", "web"
	ca := served("upstream", "orders", "", "trust", "cc:cc:cc:cc:cc:cc:cc:cc:cc:cc", 900*24*time.Hour)
	ca.Truststore = "upstream-cas"
	expired := served("upstream", "billing", "", "client", "ee:ee:ee:ee:ee:ee:ee:ee:ee:ee", -time.Hour)
	bare := &nodev1.ServedCertificate{Scope: "listener", Name: "bare", Role: "server", Sha256Fingerprint: "ff:ff"}

	list := Join([]*nodev1.NodeStatus{node("edge-1", web, ca, expired), node("edge-2", ca, web, bare)}, now)
	var order []string
	for _, c := range list {
		order = append(order, c.Fingerprint)
	}
	// No expiry sorts first: it is the zero time.
	if want := []string{"ff:ff", expired.Sha256Fingerprint, web.Sha256Fingerprint, ca.Sha256Fingerprint}; !slices.Equal(order, want) {
		t.Fatalf("entries %v, want %v: one per fingerprint, soonest to expire first", order, want)
	}
	w := list[2]
	if w.Source != "alias edge/web" || !slices.Equal(w.Nodes, []string{"edge-1", "edge-2"}) ||
		!slices.Equal(w.Uses, []Use{{Scope: "listener", Name: "public", Host: "api.example.com", Role: "server"}}) ||
		w.Subject != "CN=public" || w.Issuer != "CN=Edge CA" || len(w.SANs) != 2 || w.SecondsLeft != int64((10*24*time.Hour).Seconds()) ||
		!w.NotAfter.Equal(now.Add(10*24*time.Hour)) || w.NotAfter.Location() != time.UTC {
		t.Errorf("the listener certificate's entry: %+v", w)
	}
	if e := list[1]; e.SecondsLeft >= 0 || !slices.Equal(e.Nodes, []string{"edge-1"}) {
		t.Errorf("the expired certificate's entry: %+v", e)
	}
	if c := list[3]; c.Source != "truststore upstream-cas" {
		t.Errorf("the CA's entry: %+v", c)
	}
	if b := list[0]; b.Source != "inline" || b.SANs == nil || len(b.SANs) != 0 || !b.NotAfter.IsZero() {
		t.Errorf("a certificate reported with no SANs and no expiry: %+v (SANs must be [] in JSON, not null)", b)
	}
	if got := Join(nil, now); got == nil || len(got) != 0 {
		t.Errorf("no nodes: %v, want an empty list", got)
	}
}

// TestJoinTwoHostsOnOneNode: a certificate that serves two hosts of a
// Listener is one entry on one node with both uses, and the node's
// revocation state is the most telling of its two reports.
func TestJoinTwoHostsOnOneNode(t *testing.T) {
	t.Parallel()
	a := served("listener", "public", "b.example.com", "server", "aa:aa", time.Hour)
	a.Revocation, a.RevocationDetail = Good, "http://ca.example.com/ca.crl"
	b := served("listener", "public", "a.example.com", "server", "aa:aa", time.Hour)
	b.Revocation, b.RevocationDetail = Unknown, "ocsp http://ocsp.example.com: timeout"
	again := served("listener", "public", "a.example.com", "server", "aa:aa", time.Hour)
	again.Revocation = Good

	for _, order := range [][]*nodev1.ServedCertificate{{a, b, again}, {again, b, a}} {
		list := Join([]*nodev1.NodeStatus{node("edge-1", order...)}, now)
		if len(list) != 1 {
			t.Fatalf("%d entries, want 1", len(list))
		}
		c := list[0]
		if want := []Use{{"listener", "public", "a.example.com", "server"}, {"listener", "public", "b.example.com", "server"}}; !slices.Equal(c.Uses, want) {
			t.Errorf("uses %v, want %v (each once, sorted)", c.Uses, want)
		}
		if !slices.Equal(c.Nodes, []string{"edge-1"}) {
			t.Errorf("nodes %v, want the one node once", c.Nodes)
		}
		if got := c.RevocationByNode["edge-1"]; got != (NodeRevocation{State: Unknown, Detail: "ocsp http://ocsp.example.com: timeout"}) || c.Revocation != Unknown {
			t.Errorf("the node's state %+v, the fleet's %q; want unknown with the OCSP detail", got, c.Revocation)
		}
		if s := c.RevocationSummary(); s != Unknown {
			t.Errorf("summary %q: one node is all nodes, want %q", s, Unknown)
		}
	}
}

// TestRevocationRanking: the fleet's state is the most telling of the
// nodes' (revoked, then unknown, then good, then not checked), and the
// summary says how many nodes say it when they differ.
func TestRevocationRanking(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		states  []string // edge-1, edge-2, edge-3
		want    string
		summary string
	}{
		{"all unchecked", []string{"", "", ""}, NotChecked, NotChecked},
		{"all good", []string{Good, Good, Good}, Good, Good},
		{"good beats not checked", []string{"", Good, ""}, Good, "good (1/3 nodes)"},
		{"unknown beats good", []string{Good, Unknown, Good}, Unknown, "unknown (1/3 nodes)"},
		{"revoked beats unknown", []string{Unknown, Revoked, Unknown}, Revoked, "revoked (1/3 nodes)"},
		{"revoked beats good", []string{Revoked, Good, Revoked}, Revoked, "revoked (2/3 nodes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var nodes []*nodev1.NodeStatus
			for i, s := range tc.states {
				c := served("listener", "public", "api.example.com", "server", "aa:aa", time.Hour)
				c.Revocation = s
				nodes = append(nodes, node("edge-"+string(rune('1'+i)), c))
			}
			c := Join(nodes, now)[0]
			if c.Revocation != tc.want || c.RevocationSummary() != tc.summary {
				t.Errorf("fleet %q, summary %q; want %q, %q", c.Revocation, c.RevocationSummary(), tc.want, tc.summary)
			}
			for i, s := range tc.states {
				id := "edge-" + string(rune('1'+i))
				if want := cmp.Or(s, NotChecked); c.RevocationByNode[id].State != want {
					t.Errorf("%s's state %q, want %q", id, c.RevocationByNode[id].State, want)
				}
			}
		})
	}
}

// TestUnknownStateFromANode: a state this version does not know is
// unknown (never good), and the node's word is quoted and bounded in the
// detail; it still loses to revoked.
func TestUnknownStateFromANode(t *testing.T) {
	t.Parallel()
	odd := served("listener", "public", "api.example.com", "server", "aa:aa", time.Hour)
	odd.Revocation, odd.RevocationDetail = "on hold\n"+strings.Repeat("x", 500), "whatever the node said"
	good := served("listener", "public", "api.example.com", "server", "aa:aa", time.Hour)
	good.Revocation = Good
	c := Join([]*nodev1.NodeStatus{node("edge-1", good), node("edge-2", odd)}, now)[0]
	r := c.RevocationByNode["edge-2"]
	if r.State != Unknown || c.Revocation != Unknown {
		t.Fatalf("a node's unknown word: the node's state %q, the fleet's %q; want unknown", r.State, c.Revocation)
	}
	if !strings.HasPrefix(r.Detail, `the node reports "on hold\n`) || !strings.Contains(r.Detail, "…(508 bytes)") || len(r.Detail) > 120 {
		t.Errorf("detail %q: want the node's word quoted, cut, with its length", r.Detail)
	}

	revoked := served("listener", "public", "api.example.com", "server", "aa:aa", time.Hour)
	revoked.Revocation = Revoked
	if c := Join([]*nodev1.NodeStatus{node("edge-1", revoked), node("edge-2", odd)}, now)[0]; c.Revocation != Revoked {
		t.Errorf("revoked and an unknown word: fleet %q, want revoked", c.Revocation)
	}
}

func TestUseString(t *testing.T) {
	t.Parallel()
	for u, want := range map[Use]string{
		{Scope: "listener", Name: "public", Host: "api.example.com", Role: "server"}: "listener/public api.example.com (server)",
		{Scope: "upstream", Name: "orders", Role: "trust"}:                           "upstream/orders (trust)",
	} {
		if got := u.String(); got != want {
			t.Errorf("%+v.String() = %q, want %q", u, got, want)
		}
	}
}
