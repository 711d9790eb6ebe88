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
	if w.Source != "alias edge/web" || strings.Join(w.Nodes, ",") != "edge-1,edge-2" || len(w.Uses) != 1 || w.Uses[0] != (certUse{"listener", "public", "api.example.com", "server"}) ||
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
