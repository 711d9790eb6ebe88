package secretref

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
	b, err := EncodeVersion(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeVersion(b)
	if err != nil || got.GetVersion() != "3" || Of(got).Key() != "alias.edge.gw" {
		t.Fatalf("DecodeVersion = %v, %v", got, err)
	}
	if _, err := DecodeVersion([]byte{}); err == nil {
		t.Error("DecodeVersion of an empty value (names nothing) accepted")
	}
}

func TestForms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ref                  Ref
		str, kind, name, key string
	}{
		{Ref{Keystore: "edge", Alias: "gw"}, "alias/edge/gw", "alias", "edge/gw", "alias.edge.gw"},
		{Ref{Truststore: "cas"}, "truststore/cas", "truststore", "cas", "truststore.cas"},
	} {
		if got := tc.ref.String(); got != tc.str {
			t.Errorf("%+v String = %q, want %q", tc.ref, got, tc.str)
		}
		if got := tc.ref.Kind(); got != tc.kind {
			t.Errorf("%+v Kind = %q, want %q", tc.ref, got, tc.kind)
		}
		if got := tc.ref.Name(); got != tc.name {
			t.Errorf("%+v Name = %q, want %q", tc.ref, got, tc.name)
		}
		if got := tc.ref.Key(); got != tc.key {
			t.Errorf("%+v Key = %q, want %q", tc.ref, got, tc.key)
		}
	}
}

// TestNameRuleAgrees: the two wordings of the rule accept the same names.
func TestNameRuleAgrees(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"edge", "GW_1", "a-b", "", "a.b", "a/b", strings.Repeat("x", 64), strings.Repeat("x", 65), "é"} {
		if (CheckName(name) == nil) != (NameProblem("alias", name) == "") {
			t.Errorf("%q: CheckName = %v, NameProblem = %q", name, CheckName(name), NameProblem("alias", name))
		}
	}
}
