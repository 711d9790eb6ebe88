package app

import (
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"keyway.dev/internal/natsconn"
)

// natsHandlers are the policy service's NATS connection callbacks (the
// connection itself, with its TLS, user and jittered reconnects, is
// natsconn's):
//   - onReconnect (once set) restarts the views' watches;
//   - onClosed is told when the connection is closed for good: by Close,
//     or by the server after a protocol error (a maximum payload or control
//     line exceeded), after which nats.go does not reconnect; Run then
//     opens a new connection.
func natsHandlers(log *slog.Logger, onReconnect *atomic.Pointer[func()], onClosed func()) natsconn.Handlers {
	return natsconn.Handlers{
		Disconnected: func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected; serving reads from the last view", "error", err)
			}
		},
		Reconnected: func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			if f := onReconnect.Load(); f != nil {
				(*f)()
			}
		},
		Closed: func(*nats.Conn) { onClosed() },
	}
}
