package secretsclient

import (
	"strings"
	"testing"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
)

func TestKeysRoundTrip(t *testing.T) {
	t.Parallel()
	for _, ref := range []Ref{{Keystore: "edge", Alias: "gw_client-1"}, {Truststore: "upstream-cas"}} {
		got, err := ParseKey(ref.Key())
		if err != nil || got != ref {
			t.Errorf("ParseKey(%q) = %+v, %v; want %+v", ref.Key(), got, err, ref)
		}
	}
	if got := AliasKey("edge", "gw"); got != "alias.edge.gw" {
		t.Errorf("AliasKey = %q", got)
	}
	if got := TruststoreKey("cas"); got != "truststore.cas" {
		t.Errorf("TruststoreKey = %q", got)
	}
	for _, bad := range []string{"alias.edge", "alias.a.b.c", "truststore.", "service.x", "truststore.a/b"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	for _, good := range []string{"edge", "GW_1", "a-b"} {
		if err := CheckName(good); err != nil {
			t.Errorf("CheckName(%q) = %v", good, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a/b", strings.Repeat("x", 65), "é"} {
		if err := CheckName(bad); err == nil {
			t.Errorf("CheckName(%q) accepted", bad)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	v := &secretsv1.SecretVersion{Keystore: "edge", Alias: "gw", Version: "3", Sha256Fingerprint: "ab"}
	b, err := Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil || got.GetVersion() != "3" || RefOf(got).Key() != "alias.edge.gw" {
		t.Fatalf("Decode = %v, %v", got, err)
	}
	if _, err := Decode([]byte{}); err == nil {
		t.Error("Decode of an empty value (names nothing) accepted")
	}
}
