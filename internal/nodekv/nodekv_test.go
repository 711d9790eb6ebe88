package nodekv

import (
	"testing"

	"google.golang.org/protobuf/proto"

	nodev1 "keyway.dev/gen/keyway/node/v1"
)

func TestKeyRoundTrip(t *testing.T) {
	t.Parallel()
	id, ok := ID(Key("edge-1"))
	if !ok || id != "edge-1" {
		t.Fatalf("ID(Key(edge-1)) = %q, %v", id, ok)
	}
	for _, k := range []string{"node.", "service.orders", "edge-1"} {
		if id, ok := ID(k); ok {
			t.Errorf("ID(%q) = %q, want not a node key", k, id)
		}
	}
}

func TestCheckID(t *testing.T) {
	t.Parallel()
	for id, valid := range map[string]bool{"host-1234": true, "a_b=c": true, "": false, "a.b": false, "a b": false, "a*": false} {
		if err := CheckID(id); (err == nil) != valid {
			t.Errorf("CheckID(%q) = %v, want valid=%v", id, err, valid)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	in := &nodev1.NodeStatus{Id: "n1", Revision: 42, Errors: []*nodev1.NodeError{{Key: "service.x", Message: "bad"}}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Fatalf("round trip: got %v, want %v", out, in)
	}
	if _, err := Decode([]byte{0xff, 0xff}); err == nil {
		t.Fatal("Decode of garbage: no error")
	}
}

// Merge gives a status with its node's certificates and their errors,
// and changes neither of the two it is given.
func TestMergeLeavesItsInputs(t *testing.T) {
	t.Parallel()
	status := &nodev1.NodeStatus{Id: "edge-1", Revision: 7, Errors: []*nodev1.NodeError{{Key: "route.a", Message: "refused"}}}
	certs := &nodev1.NodeStatus{Id: "edge-1",
		Certificates: []*nodev1.ServedCertificate{{Scope: "upstream", Name: "orders", Role: "client"}},
		Errors:       []*nodev1.NodeError{{Key: "certificates", Message: "1 of 2 certificates listed"}}}
	m := Merge(status, certs)
	if m.GetRevision() != 7 || len(m.GetCertificates()) != 1 || m.GetCertificates()[0].GetName() != "orders" ||
		len(m.GetErrors()) != 2 || m.GetErrors()[1].GetKey() != "certificates" {
		t.Errorf("merged: %v", m)
	}
	if len(status.GetCertificates()) != 0 || len(status.GetErrors()) != 1 || len(certs.GetErrors()) != 1 {
		t.Errorf("Merge changed its inputs: status %v, certificates %v", status, certs)
	}
	if Merge(status, nil) != status || Merge(nil, certs) != nil {
		t.Error("Merge without certificates, or without a status, is not the status")
	}
	if id, ok := CertsID(CertsKey("edge-1")); !ok || id != "edge-1" {
		t.Errorf("CertsID(CertsKey(edge-1)) = %q, %t", id, ok)
	}
	if _, ok := ID(CertsKey("edge-1")); ok {
		t.Error("a certificates key reads as a status key")
	}
}
