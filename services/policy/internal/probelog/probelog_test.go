package probelog_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/policy/internal/probelog"
)

func TestLogKeepsTheLastProbeOfEachBinding(t *testing.T) {
	t.Parallel()
	l := probelog.New()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.Add(probelog.Record{Binding: "orders", Time: t0, Results: []*policyv1.ProbeResult{{Endpoint: "a:1", Ok: true}}})
	res := &policyv1.ProbeResult{Endpoint: "a:1", Reason: "unknown_authority", Reachable: true}
	l.Add(probelog.Record{Binding: "orders", Time: t0.Add(time.Minute), Refused: true, Results: []*policyv1.ProbeResult{res},
		Notes: []string{strings.Repeat("x", 5000)}})
	res.Reason = "changed after Add"
	got, ok := l.Last("orders")
	switch {
	case !ok:
		t.Fatal("no record of orders")
	case got.OK() || !got.Refused || got.Results[0].GetReason() != "unknown_authority":
		t.Errorf("last record: %+v, want the refused probe as it was added", got)
	case len(got.Notes[0]) > 1100:
		t.Errorf("a note of 5000 bytes kept as %d", len(got.Notes[0]))
	}
	if _, ok := l.Last("payments"); ok {
		t.Error("a record of a binding never probed")
	}
	if (probelog.Record{Binding: "x"}).OK() {
		t.Error("a record without results is ok")
	}
}

func TestLogForgetsTheOldestPastItsBound(t *testing.T) {
	t.Parallel()
	l := probelog.New()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range probelog.MaxBindings + 1 {
		l.Add(probelog.Record{Binding: fmt.Sprintf("b-%05d", i), Time: t0.Add(time.Duration(i) * time.Second)})
	}
	if n := len(l.All()); n != probelog.MaxBindings {
		t.Errorf("%d records, want %d", n, probelog.MaxBindings)
	}
	if _, ok := l.Last("b-00000"); ok {
		t.Error("the oldest record is still kept")
	}
	if _, ok := l.Last(fmt.Sprintf("b-%05d", probelog.MaxBindings)); !ok {
		t.Error("the newest record is not kept")
	}
}
