// Package audittest reads the audit stream back in tests: every message as
// stored, raw bytes included, so that a test can both check the records and
// search the stream for what must not be in it.
package audittest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"keyway.dev/internal/audit"
)

// Message is one stored message of the audit stream.
type Message struct {
	Subject string
	Data    []byte
	Record  audit.Record
}

// Messages returns every message of the audit stream (audit.StreamName),
// oldest first, read over nc.
func Messages(tb testing.TB, nc *nats.Conn) []Message {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := js.Stream(ctx, audit.StreamName)
	if err != nil {
		tb.Fatalf("opening the audit stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var out []Message
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			tb.Fatalf("reading audit record %d: %v", seq, err)
		}
		msg := Message{Subject: m.Subject, Data: m.Data}
		if err := json.Unmarshal(m.Data, &msg.Record); err != nil {
			tb.Fatalf("audit record %d is not JSON: %v\n%s", seq, err, m.Data)
		}
		out = append(out, msg)
	}
	return out
}

// Find returns the messages whose records match.
func Find(msgs []Message, match func(audit.Record) bool) []Message {
	var out []Message
	for _, m := range msgs {
		if match(m.Record) {
			out = append(out, m)
		}
	}
	return out
}
