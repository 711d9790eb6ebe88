package limits

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestQuote(t *testing.T) {
	t.Parallel()
	if got := Quote("short"); got != `"short"` {
		t.Errorf("Quote(short) = %s", got)
	}
	long := strings.Repeat("é", 4<<20)
	got := Quote(long)
	if len(got) > 100 || !strings.HasSuffix(got, "…(8388608 bytes)") {
		t.Errorf("Quote of 8 MiB = %.200s (%d bytes)", got, len(got))
	}
	args := QuoteArgs("%s %q %d %%q %q", []any{long, long, 3, "x"})
	if args[0] != long || len(args[1].(string)) > 100 || args[3] != "x" {
		t.Errorf("QuoteArgs cut the wrong arguments")
	}
}

func TestLabelProblem(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ k, v, want string }{
		{"app", "orders", ""},
		{"keyway.dev/team", "", ""},
		{"app.kubernetes.io/name", "a-b_c.d", ""},
		{"", "x", "empty"},
		{"/x", "", "empty prefix"},
		{"Bad_Prefix/x", "", "not a DNS subdomain"},
		{strings.Repeat("a", 254) + "/x", "", "prefix"},
		{strings.Repeat("a", 64), "", "name is 64"},
		{"-x", "", "starting and ending"},
		{"a", strings.Repeat("v", 64), "value is 64"},
		{"a", "bad value", "must be empty or"},
		{"a\x00", "", "starting and ending"},
	} {
		got := LabelProblem(c.k, c.v)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("LabelProblem(%.40q, %.40q) = %q; want %q", c.k, c.v, got, c.want)
		}
	}
}

func TestJSONErrorPath(t *testing.T) {
	t.Parallel()
	data := []byte(`{"name": "x", "messageType": [{"name": "a"}, {"field": [{"name": "b"}], "nope": 1}]}`)
	err := protojson.Unmarshal(data, &descriptorpb.FileDescriptorProto{})
	if err == nil {
		t.Fatal("no error")
	}
	got := JSONError(data, err).Error()
	if !strings.HasPrefix(got, `messageType[1].nope: unknown field "nope"`) {
		t.Errorf("JSONError = %s", got)
	}
	data = []byte("{\n  \"value\": \"" + strings.Repeat("x", 1000) + "\"}")
	err = protojson.Unmarshal(data, &wrapperspb.Int32Value{})
	got = JSONError(data, err).Error()
	if len(got) > 300 {
		t.Errorf("JSONError quotes too much: %d bytes", len(got))
	}
}
