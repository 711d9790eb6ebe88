// Package failover sends each HTTP request to one of several replicas of a
// service, and to the next one when a replica cannot be reached: the
// client side of a replicated service (the secrets service's replicas,
// Vault's servers) when no load balancer stands in front of it.
//
// Only transport errors move a request on (refused or reset connections,
// timeouts of a dial or a handshake): an HTTP answer, whatever its status,
// is the replica's and is returned as it is. A request may therefore reach
// a replica that dies before it answers and then be sent again to the
// next: the services Keyway uses this for take each request as a read or
// as an upsert of a whole value, so a second delivery changes nothing a
// first did not.
package failover

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// MaxReplayBody is the largest request body kept to send again to another
// replica; a larger one is sent once.
const MaxReplayBody = 4 << 20

// Transport is an [http.RoundTripper] over the base URLs of a service's
// replicas. It rewrites each request's scheme and host to the replica it
// prefers (the last that answered), and on a transport error tries the
// others in order. Safe for concurrent use.
type Transport struct {
	// Passing, when set, marks answers that are not the replica's own:
	// the request moves on to the next replica as after a transport
	// error, and when every replica answers so, RoundTrip returns an
	// error. Vault's standbys answer 307 to the address of an active node
	// they cannot reach (it just died): [Redirect].
	Passing func(*http.Response) bool

	replicas []*url.URL
	next     http.RoundTripper
	prefer   atomic.Int32
}

// Redirect is a Passing test: a 3xx answer points elsewhere, and the
// replicas are all known already.
func Redirect(resp *http.Response) bool { return resp.StatusCode >= 300 && resp.StatusCode < 400 }

// Split parses a comma-separated list of base URLs (spaces allowed around
// commas), as the flags that name a replicated service take them.
func Split(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// New returns a Transport over urls (each scheme://host[:port], with no
// path), sending through next (http.DefaultTransport when nil).
func New(urls []string, next http.RoundTripper) (*Transport, error) {
	if len(urls) == 0 {
		return nil, errors.New("failover: no URL given")
	}
	if next == nil {
		next = http.DefaultTransport
	}
	t := &Transport{next: next}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("failover: %q is not a base URL: want http(s)://host:port", raw)
		}
		if strings.Trim(u.Path, "/") != "" {
			return nil, fmt.Errorf("failover: %q has a path: give the base URL only (http(s)://host:port)", raw)
		}
		t.replicas = append(t.replicas, u)
	}
	return t, nil
}

// RoundTrip sends req to the preferred replica, then to each other one in
// turn while the attempt ends in a transport error and req's context is
// live. It returns the first answer, or the last error.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		body, err := io.ReadAll(io.LimitReader(req.Body, MaxReplayBody+1))
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("failover: reading the request body: %w", err)
		}
		if len(body) > MaxReplayBody {
			return nil, fmt.Errorf("failover: request body over %d bytes", MaxReplayBody)
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	n := len(t.replicas)
	start := int(t.prefer.Load())
	var errs []error
	for i := range n {
		idx := (start + i) % n
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = t.replicas[idx].Scheme, t.replicas[idx].Host, ""
		if i > 0 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, fmt.Errorf("failover: rewinding the request body: %w", err)
			}
			r.Body = body
		}
		resp, err := t.next.RoundTrip(r)
		if err == nil && t.Passing != nil && t.Passing(resp) {
			err = fmt.Errorf("answered %s, not its own answer", resp.Status)
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if err == nil {
			if idx != start {
				t.prefer.Store(int32(idx))
			}
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.replicas[idx].Host, err))
		if req.Context().Err() != nil || (req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
			break
		}
	}
	return nil, errors.Join(errs...)
}
