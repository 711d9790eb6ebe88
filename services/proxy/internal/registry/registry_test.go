package registry

import (
	"fmt"
	"strings"
	"testing"

	nodev1 "keyway.dev/gen/keyway/node/v1"

	"keyway.dev/internal/nodekv"
)

// A node with more certificates than fit lists what fits, says how many it
// left out, and stays under the limit.
func TestFitTrimsCertificates(t *testing.T) {
	t.Parallel()
	st := &nodev1.NodeStatus{Id: "big"}
	for i := range 20000 {
		st.Certificates = append(st.Certificates, &nodev1.ServedCertificate{
			Scope: "upstream", Name: fmt.Sprintf("svc-%d", i), Role: "client",
			Sha256Fingerprint: strings.Repeat("ab:", 31) + "ab",
		})
	}
	b, err := fit(st, maxStatusBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > maxStatusBytes {
		t.Fatalf("encoded status %d bytes, limit %d", len(b), maxStatusBytes)
	}
	got, err := nodekv.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	n := len(got.GetCertificates())
	if n == 0 || n == 20000 {
		t.Fatalf("%d certificates listed", n)
	}
	if es := got.GetErrors(); len(es) != 1 || es[0].GetKey() != "certificates" || !strings.Contains(es[0].GetMessage(), fmt.Sprintf("%d of 20000", n)) {
		t.Fatalf("errors: %v", es)
	}

	small := &nodev1.NodeStatus{Id: "small", Certificates: st.Certificates[:3]}
	if b, _ := fit(small, maxStatusBytes); len(b) == 0 || len(small.GetErrors()) != 0 || len(small.GetCertificates()) != 3 {
		t.Fatalf("a small status was changed: %v", small)
	}
}
