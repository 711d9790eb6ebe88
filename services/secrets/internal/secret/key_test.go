package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestPrivateKeyRedacts(t *testing.T) {
	t.Parallel()
	pem := []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
	k := NewPrivateKey(pem)
	holder := struct {
		Exported PrivateKey
		hidden   PrivateKey
	}{k, k}

	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		out = append(out, fmt.Sprintf(verb, k), fmt.Sprintf(verb, holder), fmt.Sprintf(verb, &holder))
	}
	j, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, string(j))
	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		slog.New(h).Info("x", "key", k, "holder", holder)
	}
	out = append(out, logs.String())
	for _, s := range out {
		if strings.Contains(s, "BEGIN PRIVATE KEY") || strings.Contains(s, "c2VjcmV0") || strings.Contains(s, fmt.Sprintf("%x", pem[:12])) {
			t.Errorf("key material printed: %s", s)
		}
	}
	if !bytes.Equal(k.PEM(), pem) {
		t.Error("PEM() does not return the key")
	}
}
