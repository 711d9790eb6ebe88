package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "keyway.dev/gen/keyway/node/v1"
	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// TestCerts: the nodes' reports join into one entry per certificate,
// soonest to expire first, with where each is used and on how many nodes;
// --expiring-within keeps the ones that expire within it.
func TestCerts(t *testing.T) {
	t.Parallel()
	served := func(scope, name, host, role, fp string, left time.Duration) *nodev1.ServedCertificate {
		return &nodev1.ServedCertificate{Scope: scope, Name: name, Host: host, Role: role, Sha256Fingerprint: fp,
			NotAfter: timestamppb.New(now.Add(left)), Subject: "CN=" + name, Issuer: "CN=Edge CA", Sans: []string{host, "spiffe://example.org/" + name}}
	}
	web := served("listener", "public", "api.example.com", "server", "aa:aa:aa:aa:aa:aa:aa:aa:aa:aa", 10*24*time.Hour)
	web.Keystore, web.Alias = "edge", "web"
	ca := served("upstream", "orders", "", "trust", "cc:cc:cc:cc:cc:cc:cc:cc:cc:cc", 900*24*time.Hour)
	ca.Truststore = "upstream-cas"
	expired := served("upstream", "billing", "", "client", "ee:ee:ee:ee:ee:ee:ee:ee:ee:ee", -time.Hour)
	f := &fakePolicyService{rollout: &policyv1.Rollout{
		Revision: 7,
		Serving:  []*nodev1.NodeStatus{node("edge-1", 7, web, ca, expired), node("edge-2", 7, web, ca)},
	}}
	url := f.serve(t)

	out, _, err := keywayctl(t, url, "", "certs", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Items []fleetCert `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("certs -o json: %v\n%s", err, out)
	}
	list := doc.Items
	if len(list) != 3 {
		t.Fatalf("certs -o json lists %d certificates, want 3 (one per fingerprint):\n%s", len(list), out)
	}
	for i, want := range []string{expired.Sha256Fingerprint, web.Sha256Fingerprint, ca.Sha256Fingerprint} {
		if list[i].Fingerprint != want {
			t.Errorf("entry %d is %s, want %s: soonest to expire first", i, list[i].Fingerprint, want)
		}
	}
	w := list[1]
	if w.Source != "alias edge/web" || strings.Join(w.Nodes, ",") != "edge-1,edge-2" || len(w.Uses) != 1 || w.Uses[0] != (certUse{Scope: "listener", Name: "public", Host: "api.example.com", Role: "server"}) ||
		w.Subject != "CN=public" || w.Issuer != "CN=Edge CA" || len(w.SANs) != 2 || w.SecondsLeft != int64((10*24*time.Hour).Seconds()) {
		t.Errorf("the listener certificate's entry: %+v", w)
	}
	if list[0].SecondsLeft >= 0 || list[2].Source != "truststore upstream-cas" {
		t.Errorf("entries: expired %+v, CA %+v", list[0], list[2])
	}

	out, _, err = keywayctl(t, url, "", "certs", "--expiring-within", "720h")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"EXPIRES", "EXPIRED", "CN=billing", "CN=public", "api.example.com +1", "alias edge/web", "listener/public api.example.com (server)", "2/2", "1/2"} {
		if !strings.Contains(out, want) {
			t.Errorf("certs --expiring-within 720h lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "upstream-cas") {
		t.Errorf("certs --expiring-within 720h lists the CA that expires in 900 days:\n%s", out)
	}
	if out, _, err = keywayctl(t, url, "", "certs", "-o", "yaml"); err != nil || !strings.Contains(out, "fingerprint: ee:ee") {
		t.Errorf("certs -o yaml: %v\n%s", err, out)
	}
	if _, _, err = keywayctl(t, url, "", "certs", "--expiring-within", "-1h"); err == nil {
		t.Error("certs --expiring-within -1h succeeded")
	}
}

// TestCertsRevocation: each node's revocation report of a certificate is
// kept, and the fleet's is the most telling (revoked, unknown, good, not
// checked); the table says how many nodes agree, or each node's with
// --nodes.
func TestCertsRevocation(t *testing.T) {
	t.Parallel()
	served := func(fp, state, detail string) *nodev1.ServedCertificate {
		return &nodev1.ServedCertificate{Scope: "listener", Name: "public", Host: "api.example.com", Role: "server", Sha256Fingerprint: fp,
			NotAfter: timestamppb.New(now.Add(24 * time.Hour)), Subject: "CN=api", Revocation: state, RevocationDetail: detail}
	}
	trust := &nodev1.ServedCertificate{Scope: "listener", Name: "public", Role: "trust", Sha256Fingerprint: "cc:cc", NotAfter: timestamppb.New(now.Add(48 * time.Hour))}
	f := &fakePolicyService{rollout: &policyv1.Rollout{
		Revision: 3,
		Serving: []*nodev1.NodeStatus{
			node("edge-1", 3, served("aa:aa", "good", "ocsp http://ocsp.example.com"), served("bb:bb", "good", "http://ca.example.com/ca.crl"), trust),
			node("edge-2", 3, served("aa:aa", "revoked", "ocsp http://ocsp.example.com, reason keyCompromise"), served("bb:bb", "unknown", "CRL http://ca.example.com/ca.crl: 503"), trust),
		},
	}}
	url := f.serve(t)
	out, _, err := keywayctl(t, url, "", "certs", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Items []fleetCert `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]fleetCert{}
	for _, c := range doc.Items {
		got[c.Fingerprint] = c
	}
	if c := got["aa:aa"]; c.Revocation != "revoked" || c.RevocationByNode["edge-1"].State != "good" ||
		c.RevocationByNode["edge-2"] != (nodeRevocation{State: "revoked", Detail: "ocsp http://ocsp.example.com, reason keyCompromise"}) {
		t.Errorf("a certificate one node says is revoked: %+v", c)
	}
	if c := got["bb:bb"]; c.Revocation != "unknown" {
		t.Errorf("a certificate one node cannot tell: %+v", c)
	}
	if c := got["cc:cc"]; c.Revocation != "not checked" || c.RevocationByNode["edge-1"].State != "not checked" {
		t.Errorf("a trusted CA: %+v", c)
	}

	out, _, err = keywayctl(t, url, "", "certs")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"REVOCATION", "revoked (1/2 nodes)", "unknown (1/2 nodes)", "not checked"} {
		if !strings.Contains(out, want) {
			t.Errorf("certs lacks %q:\n%s", want, out)
		}
	}
	if out, _, err = keywayctl(t, url, "", "certs", "--nodes"); err != nil || !strings.Contains(out, "edge-1=good,edge-2=revoked") {
		t.Errorf("certs --nodes: %v\n%s", err, out)
	}
}
