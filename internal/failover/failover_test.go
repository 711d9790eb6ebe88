package failover_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"keyway.dev/internal/failover"
)

// A replica that is down is skipped, the body reaches the next one whole,
// and the replica that answered is asked first next time.
func TestTransportMovesOnFromADeadReplica(t *testing.T) {
	t.Parallel()
	var hits []string
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hits = append(hits, string(b))
		w.WriteHeader(http.StatusTeapot)
	}))
	defer live.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	tr, err := failover.New(failover.Split(deadURL+", "+live.URL), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr}
	for range 2 {
		resp, err := c.Post(deadURL+"/x", "text/plain", io.NopCloser(strings.NewReader("payload")))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTeapot {
			t.Fatalf("status %d, want the live replica's 418", resp.StatusCode)
		}
	}
	if len(hits) != 2 || hits[0] != "payload" || hits[1] != "payload" {
		t.Errorf("live replica saw %q, want the payload twice", hits)
	}
}

func TestNewRefusesWhatIsNotABaseURL(t *testing.T) {
	t.Parallel()
	for _, bad := range [][]string{nil, {"127.0.0.1:8200"}, {"http://h:1/v1"}, {"ftp://h"}} {
		if _, err := failover.New(bad, nil); err == nil {
			t.Errorf("New(%q) accepted it", bad)
		}
	}
}

// A replica that only points elsewhere (a Vault standby whose active node
// died) is passed over; when all do, the caller gets an error, not the
// redirect.
func TestTransportPassesOverRedirects(t *testing.T) {
	t.Parallel()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:1/v1/x", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer live.Close()

	tr, err := failover.New([]string{redirect.URL, live.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr.Passing = failover.Redirect
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(redirect.URL + "/v1/x")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("got %v %v, want the live replica's 200", resp, err)
	}
	resp.Body.Close()

	only, err := failover.New([]string{redirect.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	only.Passing = failover.Redirect
	c.Transport = only
	if resp, err := c.Get(redirect.URL + "/v1/x"); err == nil {
		resp.Body.Close()
		t.Fatalf("every replica redirects: got %s, want an error", resp.Status)
	}
}
