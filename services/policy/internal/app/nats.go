package app

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// natsOptions are the policy service's NATS connection options, kept in
// one place so that a shared connection package can take them over:
//   - reconnect forever after a network failure (RetryOnFailedConnect,
//     MaxReconnects(-1), ReconnectWait 250 ms with nats.go's jitter);
//   - onReconnect (once set) restarts the views' watches;
//   - onClosed is told when the connection is closed for good: by Close,
//     or by the server after a protocol error, after which nats.go does not
//     reconnect; Run then opens a new connection.
func natsOptions(log *slog.Logger, onReconnect *atomic.Pointer[func()], onClosed func()) []nats.Option {
	return []nats.Option{
		nats.Name("keyway-policy"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected; serving reads from the last view", "error", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
			if f := onReconnect.Load(); f != nil {
				(*f)()
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { onClosed() }),
	}
}
