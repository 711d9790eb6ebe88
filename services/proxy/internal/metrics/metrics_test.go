package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"keyway.dev/internal/failure"
	"keyway.dev/proxy/internal/publish"
)

func newMetrics() *Metrics {
	return New(func() *publish.Snapshot { return &publish.Snapshot{} })
}

// seriesOf counts the series of the upstream metrics that name upstream.
func seriesOf(t *testing.T, m *Metrics, upstream string) int {
	t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "keyway_upstream_") {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "upstream" && l.GetValue() == upstream {
					n++
				}
			}
		}
	}
	return n
}

func TestRequestsByCodeAndClass(t *testing.T) {
	m := newMetrics()
	r := m.Recorder("orders")
	for _, c := range []struct {
		code   int
		reason failure.Reason
	}{{200, ""}, {200, ""}, {204, ""}, {304, ""}, {404, ""}, {500, ""}, {101, ""}, {502, failure.UnknownAuthority}, {499, failure.ClientCanceled}} {
		r.Request(c.code, c.reason, time.Millisecond)
	}
	for code, want := range map[string]float64{"200": 2, "204": 1, "304": 1, "404": 1, "500": 1, "101": 1, "502": 1, "499": 1} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues("orders", code)); got != want {
			t.Errorf("requests_total{orders,%s} = %v, want %v", code, got, want)
		}
	}
	want := map[string]uint64{"1xx": 1, "2xx": 3, "3xx": 1, "4xx": 1, "5xx": 1, "error": 2}
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range fams {
		if f.GetName() != "keyway_upstream_request_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "class" {
					got[l.GetValue()] = s.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("duration classes %v, want %v", got, want)
	}
	for class, n := range want {
		if got[class] != n {
			t.Errorf("request_duration_seconds{orders,%s} count = %d, want %d", class, got[class], n)
		}
	}
	if got := testutil.ToFloat64(m.errors.WithLabelValues("orders", string(failure.UnknownAuthority))); got != 1 {
		t.Errorf("errors_total{orders,unknown_authority} = %v, want 1", got)
	}
}

// Recording a request whose code and class were seen before allocates
// nothing.
func TestRequestDoesNotAllocate(t *testing.T) {
	m := newMetrics()
	r := m.Recorder("orders")
	r.Request(200, "", time.Millisecond)
	r.Request(404, "", time.Millisecond)
	if n := testing.AllocsPerRun(1000, func() {
		r.Request(200, "", time.Millisecond)
		r.Request(404, "", time.Millisecond)
	}); n != 0 {
		t.Errorf("Request allocates %v times, want 0", n)
	}
}

// The series of an upstream stay while any Upstream built for it holds its
// recorder (a rebuild), and go with the last release (a deleted Service).
// A request that a cut-short drain reports afterwards does not bring them
// back; a Service created again under the name starts afresh.
func TestSeriesOfDeletedUpstreamsGo(t *testing.T) {
	m := newMetrics()
	old := m.Recorder("orders")
	old.Request(200, "", time.Millisecond)
	m.ObserveHandshake("orders", "", time.Millisecond)
	m.Recorder("billing").Request(200, "", time.Millisecond)
	rebuilt := m.Recorder("orders")
	if rebuilt != old {
		t.Fatal("a rebuilt Upstream got another recorder")
	}
	old.Release()
	rebuilt.Request(503, failure.ConnectionRefused, time.Millisecond)
	// requests 200 and 503, durations 2xx and error, errors, handshakes,
	// handshake duration.
	if n := seriesOf(t, m, "orders"); n != 7 {
		t.Errorf("after a rebuild: %d series of orders, want 7", n)
	}
	rebuilt.Release()
	if n := seriesOf(t, m, "orders"); n != 0 {
		t.Errorf("after the last release: %d series of orders, want 0", n)
	}
	rebuilt.Request(200, "", time.Millisecond) // a request a drain cut short
	if n := seriesOf(t, m, "orders"); n != 0 {
		t.Errorf("a late request brought back %d series", n)
	}
	if n := seriesOf(t, m, "billing"); n != 2 {
		t.Errorf("billing: %d series, want 2", n)
	}
	again := m.Recorder("orders")
	again.Request(200, "", time.Millisecond)
	if got := testutil.ToFloat64(m.requests.WithLabelValues("orders", "200")); got != 1 {
		t.Errorf("orders created again: requests_total{200} = %v, want 1", got)
	}
}
