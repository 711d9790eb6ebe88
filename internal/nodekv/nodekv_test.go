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
