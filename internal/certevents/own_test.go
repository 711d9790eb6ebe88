package certevents_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"keyway.dev/internal/certevents"
	"keyway.dev/internal/certs"
	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/natstest"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
)

// The policy and secrets services, each connected to a real NATS server as
// its own user with natsperm's permissions, publish their own
// certificates' expiry events: an api-server certificate with 5 days left
// gives one 7-day event, an internal certificate with 20 days one 30-day
// event, one with 60 days none; looking again publishes nothing more, and
// the renewed certificate that replaces the first gives none. The server
// refuses none of the publications, and the counter counts them.
func TestServicesPublishTheirOwnCertificatesExpiry(t *testing.T) {
	t.Parallel()
	users := natsperm.Users(natsperm.Buckets{})
	srv := natstest.Start(t, func(o *server.Options) {
		for _, u := range users {
			o.Users = append(o.Users, &server.User{Username: u.Name, Password: u.Name + "-pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: u.Publish}, Subscribe: &server.SubjectPermission{Allow: u.Subscribe},
			}})
		}
		// An operator's alerting, the one reader of the subject here.
		o.Users = append(o.Users, &server.User{Username: "alerts", Password: "alerts-pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Deny: []string{">"}}, Subscribe: &server.SubjectPermission{Allow: []string{certevents.Subject}},
		}})
	})
	alerts := srv.Connect(t, nats.UserInfo("alerts", "alerts-pw"))
	events := make(chan *nats.Msg, 64)
	if _, err := alerts.ChanSubscribe(certevents.Subject, events); err != nil {
		t.Fatal(err)
	}
	if err := alerts.Flush(); err != nil {
		t.Fatal(err)
	}

	ca := testca.New(t, "internal CA")
	now := time.Now()
	issue := func(cn string, left time.Duration) *x509.Certificate {
		return ca.Issue(testca.Options{CommonName: cn, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(left)}).Cert
	}
	for _, tc := range []struct {
		service, user, internalRole string
	}{
		{"policy", natsperm.Policy, "internal-client"},
		{"secrets", natsperm.Secrets, "internal-server"},
	} {
		var refused atomic.Pointer[error]
		nc := srv.Connect(t, nats.UserInfo(tc.user, tc.user+"-pw"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			refused.Store(&err)
		}))
		api, internal, spare := issue(tc.service+" api", 5*certevents.Day), issue(tc.service+" internal", 20*certevents.Day), issue(tc.service+" spare", 60*certevents.Day)
		var mu sync.Mutex
		current := api
		counter := certevents.NewEventsCounter()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		var looks atomic.Int64
		go func() {
			defer close(done)
			certevents.WatchOwn(ctx, certevents.Own{
				Service: tc.service, Instance: tc.service + "-0", Interval: 10 * time.Millisecond,
				Certificates: map[string]func() *x509.Certificate{
					"api-server": func() *x509.Certificate {
						looks.Add(1)
						mu.Lock()
						defer mu.Unlock()
						return current
					},
					tc.internalRole: func() *x509.Certificate { return internal },
					"unused":        func() *x509.Certificate { return nil },
				},
				Publish: nc.Publish, Counter: counter,
			})
		}()
		want := map[string]string{certs.Fingerprint(api): "7d", certs.Fingerprint(internal): "30d"}
		got := map[string]certevents.Event{}
		for len(got) < len(want) {
			select {
			case m := <-events:
				var ev certevents.Event
				if err := json.Unmarshal(m.Data, &ev); err != nil {
					t.Fatalf("event %s: %v", m.Data, err)
				}
				if _, dup := got[ev.Fingerprint]; dup {
					t.Fatalf("a second event for %s: %s", ev.Fingerprint, m.Data)
				}
				got[ev.Fingerprint] = ev
			case <-time.After(10 * time.Second):
				var why error
				if err := refused.Load(); err != nil {
					why = *err
				}
				t.Fatalf("%s: events within 10s: %v, want %v (NATS error: %v)", tc.service, got, want, why)
			}
		}
		for fp, th := range want {
			ev := got[fp]
			if ev.Threshold != th || ev.Service != tc.service || ev.Instance != tc.service+"-0" || ev.Node != "" {
				t.Errorf("%s: event %+v, want threshold %s from service %s", tc.service, ev, th, tc.service)
			}
		}
		if ev := got[certs.Fingerprint(api)]; ev.Role != "api-server" || !ev.NotAfter.Equal(api.NotAfter) || ev.SecondsLeft <= 4*24*3600 {
			t.Errorf("%s: api-server event %+v", tc.service, ev)
		}
		if ev := got[certs.Fingerprint(internal)]; ev.Role != tc.internalRole {
			t.Errorf("%s: internal event %+v, want role %s", tc.service, ev, tc.internalRole)
		}
		// More looks, then the renewed certificate, then more looks:
		// nothing more is published.
		n := looks.Load()
		testwait.Until(t, 10*time.Second, "three more looks", func() bool { return looks.Load() >= n+3 })
		mu.Lock()
		current = spare
		mu.Unlock()
		n = looks.Load()
		testwait.Until(t, 10*time.Second, "three looks at the renewed certificate", func() bool { return looks.Load() >= n+3 })
		cancel()
		<-done
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := alerts.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-events:
			t.Errorf("%s: an event after the thresholds were published: %s", tc.service, m.Data)
		default:
		}
		if err := refused.Load(); err != nil {
			t.Errorf("%s: the NATS server refused a publication: %v", tc.service, *err)
		}
		for th, count := range map[string]float64{"7d": 1, "30d": 1} {
			if v := testutil.ToFloat64(counter.WithLabelValues(th)); v != count {
				t.Errorf("%s: %s{threshold=%q} = %v, want %v", tc.service, certevents.EventsMetric, th, v, count)
			}
		}
	}
}
