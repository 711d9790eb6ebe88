package e2e

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// The policy and secrets services, each serving its API with a
// certificate that has 5 days left and connected to NATS as its own user
// with the permissions deploy/ grants, publish one 7-day expiry event for
// it (the server accepts it: no permissions violation), count it in
// keyway_certificate_expiry_events_total, and say so in their logs.
func TestServicesPublishTheirOwnExpiryEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server, keyway-policy and keyway-secrets")
	}
	natsURL, _ := harness.NATS(t)
	dir := t.TempDir()
	now := time.Now()
	soon := testca.From(t, harness.Suite(t).ServerCA).Issue(testca.Options{
		CommonName: "keyway-api, 5 days left", DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 24 * time.Hour),
	})
	certFile, keyFile := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	for f, data := range map[string][]byte{certFile: soon.CertPEM, keyFile: soon.KeyPEM} {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Given after the suite's --tls-cert and --tls-key, these win.
	own := []string{"--tls-cert", certFile, "--tls-key", keyFile}
	policyURL, policy := harness.Policy(t, natsURL, own...)
	secrets := harness.StartSecrets(t, natsURL, nil, own...)

	for _, svc := range []struct {
		name string
		url  string
		proc *harness.Process
	}{
		{"policy", policyURL, policy},
		{"secrets", secrets.URL, secrets.Process},
	} {
		series := `keyway_certificate_expiry_events_total{threshold="7d"}`
		testwait.Until(t, 30*time.Second, svc.name+" counting a 7-day event", func() bool {
			v, ok := scrapeSeries(t, svc.url+"/metrics", series)
			return ok && v >= 1
		})
		if v, _ := scrapeSeries(t, svc.url+"/metrics", series); v != 1 {
			t.Errorf("%s: %s = %v, want 1", svc.name, series, v)
		}
		if v, ok := scrapeSeries(t, svc.url+"/metrics", `keyway_certificate_expiry_events_total{threshold="30d"}`); ok && v != 0 {
			t.Errorf("%s published a 30-day event for a certificate first seen under 7 days", svc.name)
		}
		out := svc.proc.Output()
		if strings.Contains(out, "Permissions Violation") {
			t.Errorf("the NATS server refused a publication of %s:\n%s", svc.name, out)
		}
		if !strings.Contains(out, "certificate expiring") || !strings.Contains(out, "role=api-server") || !strings.Contains(out, "threshold=7d") {
			t.Errorf("%s's log does not name its expiring api-server certificate:\n%s", svc.name, out)
		}
	}
}

// scrapeSeries reads one series (name with its labels, as /metrics writes
// them) from a service's /metrics, as the suite's operator.
func scrapeSeries(t *testing.T, url, series string) (float64, bool) {
	t.Helper()
	resp, err := harness.Operator(t).HTTP.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}
