package harness

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/natsperm"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
)

// NATSCluster is nats-server as production runs it: several servers with
// JetStream joined by cluster routes on loopback, each with its own store
// and a monitoring port, serving TLS to the users of package natsperm with
// one password each across the cluster.
type NATSCluster struct {
	// URL lists every member's client URL, comma-separated: what a
	// service's --nats takes, so that its client fails over among them.
	URL string
	// Members are the servers, by name (nats-1, nats-2, …).
	Members []*NATSMember
	// CAFile is the CA of the servers' certificate (PEM).
	CAFile string

	creds *NATSServer // the shared credentials, registered under URL
}

// NATSMember is one server of a [NATSCluster]. Kill and Start stop it hard
// and start it again on the same ports and store.
type NATSMember struct {
	Name string
	// URL is the member's own client URL; Monitor its monitoring
	// endpoint, http://127.0.0.1:PORT.
	URL, Monitor string
	Process      *Process
	confFile     string
}

// StartNATSCluster starts n nats-server processes in one cluster with
// JetStream and waits until JetStream has a meta leader.
func StartNATSCluster(tb testing.TB, n int) *NATSCluster {
	tb.Helper()
	dir := tb.TempDir()
	ca := testca.New(tb, "keyway NATS CA")
	srv := ca.Server("localhost")
	creds := &NATSServer{dir: dir, CAFile: filepath.Join(dir, "ca.crt"), passwords: map[string]string{}}
	files := map[string][]byte{"ca.crt": ca.CertPEM(), "server.crt": srv.CertPEM, "server.key": srv.KeyPEM}
	for _, u := range natsperm.Users(natsperm.Buckets{}) {
		pw := randomPassword(tb)
		creds.passwords[u.Name] = pw
		files[u.Name+".password"] = []byte(pw + "\n")
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	users := natsperm.Render(natsperm.Users(natsperm.Buckets{}), func(user string) string { return strconv.Quote(creds.passwords[user]) })
	type ports struct{ client, route, monitor string }
	ps := make([]ports, n)
	for i := range ps {
		ps[i] = ports{FreeAddr(tb), FreeAddr(tb), FreeAddr(tb)}
	}
	c := &NATSCluster{CAFile: creds.CAFile, creds: creds}
	var urls []string
	for i, p := range ps {
		var routes []string
		for j, q := range ps {
			if j != i {
				routes = append(routes, strconv.Quote("nats-route://"+q.route))
			}
		}
		name := fmt.Sprintf("nats-%d", i+1)
		conf := fmt.Sprintf(`server_name: %q
listen: %q
http: %q
jetstream { store_dir: %q }
cluster {
  name: keyway
  listen: %q
  # Clients are given every member; they learn no other address from
  # the cluster, so a link a test cuts stays cut.
  no_advertise: true
  routes: [%s]
}
tls {
  cert_file: %q
  key_file: %q
  timeout: 2
}
%s`, name, p.client, p.monitor, filepath.Join(dir, name, "js"), p.route, strings.Join(routes, ", "),
			filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), users)
		file := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			tb.Fatal(err)
		}
		c.Members = append(c.Members, &NATSMember{Name: name, URL: "nats://" + p.client, Monitor: "http://" + p.monitor, confFile: file})
		urls = append(urls, "nats://"+p.client)
	}
	c.URL = strings.Join(urls, ",")
	creds.URL = c.URL
	natsServers.Store(c.URL, creds)
	tb.Cleanup(func() { natsServers.Delete(c.URL) })
	for _, m := range c.Members {
		m.Start(tb)
	}
	c.MetaLeader(tb, 60*time.Second)
	return c
}

// Start starts the member (again) on its ports and store, and returns once
// it accepts clients.
func (m *NATSMember) Start(tb testing.TB) {
	tb.Helper()
	m.Process = Start(tb, m.Name, Tool(tb, "nats-server", "KEYWAY_NATS_SERVER"), regexp.MustCompile(`Server is ready`), "-c", m.confFile)
}

// Kill stops the member with SIGKILL.
func (m *NATSMember) Kill() { m.Process.Kill() }

// Args are the flags that connect a service as user
// (--nats-ca, --nats-user, --nats-password-file).
func (c *NATSCluster) Args(user string) []string { return c.creds.Args(user) }

// jsz is the part of a server's /jsz that the drills read.
type jsz struct {
	ServerName string `json:"server_name"`
	Meta       struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
			Offline bool   `json:"offline"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Streams []struct {
			Name    string `json:"name"`
			Cluster struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name    string `json:"name"`
					Current bool   `json:"current"`
					Offline bool   `json:"offline"`
				} `json:"replicas"`
			} `json:"cluster"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

func (m *NATSMember) jsz() (*jsz, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(m.Monitor + "/jsz?accounts=true&streams=true")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/jsz: %s", m.Monitor, resp.Status)
	}
	var j jsz
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		return nil, fmt.Errorf("%s/jsz: %w", m.Monitor, err)
	}
	return &j, nil
}

func (c *NATSCluster) member(name string) *NATSMember {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// MetaLeader waits up to timeout until the running members agree on a
// JetStream meta leader among them, and returns it (from their monitoring
// endpoints, /jsz meta_cluster.leader).
func (c *NATSCluster) MetaLeader(tb testing.TB, timeout time.Duration) *NATSMember {
	tb.Helper()
	var leader *NATSMember
	testwait.Eventually(tb, timeout, func() error {
		seen := ""
		for _, m := range c.running() {
			j, err := m.jsz()
			if err != nil {
				return err
			}
			if j.Meta.Leader == "" || (seen != "" && j.Meta.Leader != seen) {
				return fmt.Errorf("harness: %s sees meta leader %q, others %q", m.Name, j.Meta.Leader, seen)
			}
			seen = j.Meta.Leader
		}
		if leader = c.member(seen); leader == nil || !leader.running() {
			return fmt.Errorf("harness: meta leader %q is not a running member", seen)
		}
		return nil
	})
	return leader
}

// StreamLeader waits up to timeout until the stream has a leader among the
// running members, and returns it.
func (c *NATSCluster) StreamLeader(tb testing.TB, stream string, timeout time.Duration) *NATSMember {
	tb.Helper()
	return c.streamLeader(tb, stream, timeout, false)
}

// StreamCurrent waits up to timeout until the stream has a leader and
// every running member's replica of it is current: a restarted member has
// caught up.
func (c *NATSCluster) StreamCurrent(tb testing.TB, stream string, timeout time.Duration) *NATSMember {
	tb.Helper()
	return c.streamLeader(tb, stream, timeout, true)
}

func (c *NATSCluster) streamLeader(tb testing.TB, stream string, timeout time.Duration, current bool) *NATSMember {
	tb.Helper()
	var leader *NATSMember
	testwait.Eventually(tb, timeout, func() error {
		for _, m := range c.running() {
			j, err := m.jsz()
			if err != nil {
				return err
			}
			for _, a := range j.Accounts {
				for _, s := range a.Streams {
					if s.Name != stream {
						continue
					}
					if leader = c.member(s.Cluster.Leader); leader == nil || !leader.running() {
						return fmt.Errorf("harness: stream %s leader %q is not a running member", stream, s.Cluster.Leader)
					}
					if current && s.Cluster.Leader != m.Name {
						// Only the leader tracks its
						// replicas' progress.
						continue
					}
					for _, r := range s.Cluster.Replicas {
						if !current {
							break
						}
						if rm := c.member(r.Name); rm != nil && rm.running() && (!r.Current || r.Offline) {
							return fmt.Errorf("harness: stream %s replica %s not current", stream, r.Name)
						}
					}
					return nil
				}
			}
		}
		return fmt.Errorf("harness: no running member reports stream %s", stream)
	})
	return leader
}

func (m *NATSMember) running() bool {
	select {
	case <-m.Process.Exited():
		return false
	default:
		return true
	}
}

func (c *NATSCluster) running() []*NATSMember {
	var out []*NATSMember
	for _, m := range c.Members {
		if m.running() {
			out = append(out, m)
		}
	}
	return out
}
