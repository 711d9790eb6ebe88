package certevents_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"keyway.dev/internal/certevents"
)

func TestParseThresholds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []time.Duration
		bad  bool
	}{
		{in: "30d,7d,1d", want: certevents.DefaultThresholds},
		{in: "1d, 30d ,7d,7d", want: certevents.DefaultThresholds},
		{in: "12h,90s", want: []time.Duration{12 * time.Hour, 90 * time.Second}},
		{in: "", bad: true},
		{in: "0d", bad: true},
		{in: "-1h", bad: true},
		{in: "soon", bad: true},
		{in: "3651d", bad: true},
		{in: "1d,2d,3d,4d,5d,6d,7d,8d,9d", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := certevents.ParseThresholds(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseThresholds(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseThresholds(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			if back, err := certevents.ParseThresholds(certevents.FormatThresholds(got)); err != nil || !reflect.DeepEqual(back, got) {
				t.Errorf("FormatThresholds does not read back: %v %v", back, err)
			}
		})
	}
}

// A certificate is published once per threshold as its time left goes
// down; one seen first under 7 days gives only the 7-day event; a failed
// publication is tried again; a certificate gone and back is new.
func TestTrackerOncePerThreshold(t *testing.T) {
	t.Parallel()
	var got []string
	fail := false
	tr := certevents.NewTracker("node-1", nil, func(e certevents.Event) error {
		if fail {
			return errors.New("nats: connection closed")
		}
		if e.Node != "node-1" || e.ThresholdSeconds <= 0 {
			t.Errorf("event %+v", e)
		}
		got = append(got, e.Key())
		return nil
	})
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := certevents.Certificate{Fingerprint: "aa", NotAfter: start.Add(40 * certevents.Day), Role: "listener-server"}
	b := certevents.Certificate{Fingerprint: "bb", NotAfter: start.Add(5 * certevents.Day), Role: "upstream-ca"}
	step := func(at time.Duration, want ...string) {
		t.Helper()
		got = nil
		if _, err := tr.Observe(start.Add(at), []certevents.Certificate{a, b, a}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) && (len(got) != 0 || len(want) != 0) {
			t.Fatalf("at +%v: published %v, want %v", at, got, want)
		}
	}
	step(0, "bb/7d")
	step(time.Hour)
	step(11*certevents.Day, "aa/30d", "bb/1d") // bb expired: its last threshold
	step(12 * certevents.Day)
	fail = true
	if _, err := tr.Observe(start.Add(34*certevents.Day), []certevents.Certificate{a}); err == nil {
		t.Fatal("a failed publication was not reported")
	}
	fail = false
	step(34*certevents.Day, "aa/7d", "bb/1d") // bb was forgotten while gone: new again
	step(39*certevents.Day+time.Hour, "aa/1d")
	step(50 * certevents.Day)
}
