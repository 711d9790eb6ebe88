package model

import (
	"net/http"
	"strings"
	"testing"
)

// Every path literalPath lets skip the ServeMux is one a ServeMux accepts.
func FuzzLiteralPathsRegister(f *testing.F) {
	for _, p := range []string{"/", "/orders/", "/orders", "/a/b/c/", "/a%zz/", "/%2F/", "/ü/ñ", "/a//b", "/./", "/../x",
		"/a}", "/a{b}", "/{x}", "/a b", "/a\tb", "/\x00", "/" + strings.Repeat("s/", 200), "/$", "/{$}", "/a:b@c"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		p = "/" + p // the route's check has made sure of it
		if !literalPath(p) {
			return
		}
		if err := registerPattern(http.NewServeMux(), p); err != nil {
			t.Errorf("literalPath(%q), yet a ServeMux refuses it: %v", p, err)
		}
	})
}
