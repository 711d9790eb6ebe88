package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"keyway.dev/internal/access"
	"keyway.dev/internal/testca"
	"keyway.dev/internal/testwait"
	"keyway.dev/tests/harness"
)

// Environment of the console's browser test.
const (
	// EnvRequireChromium, when set, fails the test if Chromium is absent
	// instead of skipping it (make test sets it: make tools installs
	// Debian's chromium).
	EnvRequireChromium = "KEYWAY_REQUIRE_CHROMIUM"
	// EnvChromium is Chromium's path; default: chromium on PATH.
	EnvChromium = "KEYWAY_CHROMIUM"
	// EnvScreenshots is a folder to keep the pages' screenshots in;
	// default: the test's artifact folder (go test -artifacts keeps it).
	EnvScreenshots = "KEYWAY_CONSOLE_SCREENSHOTS"
)

// chromium finds the browser, or skips (or fails, with EnvRequireChromium).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(EnvChromium); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err == nil {
		return p
	}
	if os.Getenv(EnvRequireChromium) != "" {
		t.Fatalf("chromium is not installed and %s is set: install it with scripts/debian.sh chromium (make tools does), or give its path in %s", EnvRequireChromium, EnvChromium)
	}
	t.Skipf("chromium not found (%v): scripts/debian.sh chromium installs it; set %s to make its absence a failure", err, EnvRequireChromium)
	return ""
}

// spkiPin is the base64 SHA-256 of a certificate's public key, the form
// Chromium's --ignore-certificate-errors-spki-list takes: the browser
// trusts that one key, not every certificate.
func spkiPin(t *testing.T, certFile string) string {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// The console, in a real headless Chromium with JavaScript off: the policy
// service with two proxy nodes and a tls-outbound binding applied (and
// probed) through keywayctl; each page is loaded with a viewer's bearer
// token, its table checked against what keywayctl reads from the API, and
// a screenshot saved.
func TestConsoleInChromium(t *testing.T) {
	harness.FullTier(t)
	browserPath := chromium(t)
	shots := os.Getenv(EnvScreenshots)
	if shots == "" {
		shots = t.ArtifactDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)

	nats := harness.StartNATS(t)
	consoleAddr := harness.FreeAddr(t)
	policyURL, _ := harness.Policy(t, nats.URL, "--console-listen", consoleAddr, "--node-ttl", nodeTTL)
	consoleURL := "https://" + consoleAddr
	ctl := func(args ...string) string {
		t.Helper()
		stdout, stderr, code := harness.Run(t, harness.Bin(t, "keywayctl"), append(append([]string{"--server", policyURL}, harness.Operator(t).Args...), args...)...)
		if code != 0 {
			t.Fatalf("keywayctl %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
		return stdout
	}
	for _, id := range []string{"node-01", "node-02"} {
		harness.StartProxy(t, nats.URL, id, heartbeatArgs...)
	}

	// A TLS upstream with its own CA, and a binding that trusts that CA:
	// the nodes report the CA, the probe at apply reaches the upstream.
	upCA := testca.New(t, "orders upstream CA")
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	up.TLS = &tls.Config{Certificates: []tls.Certificate{upCA.Server("orders.internal").TLS}}
	up.StartTLS()
	t.Cleanup(up.Close)
	dir := t.TempDir()
	manifest := filepath.Join(dir, "orders.yaml")
	caPEM := strings.ReplaceAll(strings.TrimSpace(string(upCA.CertPEM())), "\n", "\n      ")
	if err := os.WriteFile(manifest, fmt.Appendf(nil, `apiVersion: keyway.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec: {address: %q, protocol: http1}
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata: {name: orders}
spec: {path: /orders/, service: orders}
---
apiVersion: keyway.dev/v1alpha1
kind: PolicyBinding
metadata: {name: orders-tls}
spec:
  targetRef: {kind: Service, name: orders}
  policyRef: {name: tls-outbound}
  config:
    skipValidation: false
    sni: orders.internal
    trustedCA: |
      %s
`, up.Listener.Addr().String(), caPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl("apply", "-f", manifest, "--wait", "--timeout", "60s")

	// What the API says, through keywayctl.
	var status rollout
	if err := json.Unmarshal([]byte(ctl("status", "-o", "json")), &status); err != nil {
		t.Fatal(err)
	}
	var certs struct {
		Items []struct {
			Fingerprint, Subject string
			Nodes                []string
			Revocation           string
			RevocationByNode     map[string]struct{ State, Detail string }
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(ctl("certs", "-o", "json")), &certs); err != nil {
		t.Fatal(err)
	}
	certsTable := ctl("certs")
	if len(certs.Items) == 0 || len(status.ids()) != 2 {
		t.Fatalf("the API reports %d certificates and nodes %v; want the upstream CA on 2 nodes", len(certs.Items), status.ids())
	}

	// The browser: headless, as root without the sandbox (CI runs as
	// root), trusting the console's key alone, with JavaScript off: the
	// pages are read over the DOM domain of the protocol, no script runs.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browserPath),
		chromedp.NoSandbox,
		chromedp.WindowSize(1440, 900),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiPin(t, harness.Suite(t).ServerCert)),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelBrowser)
	do := func(ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(tctx, steps...); err != nil {
			t.Fatalf("chromium: %v", err)
		}
	}
	screenshot := func(ctx context.Context, name string) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("chromium: screenshot of %s: %v", name, err)
		}
		p := filepath.Join(shots, name+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", p, len(png))
	}
	// load opens a page and returns the element that opens with open
	// (`<table id="nodes"`), up to closing, as the browser holds it.
	load := func(ctx context.Context, path, open, closing string) string {
		t.Helper()
		do(ctx, chromedp.Navigate(consoleURL+path))
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		html, err := chromedp.Run(tctx, pageHTML)
		if err != nil {
			t.Fatalf("chromium: %s: %v", path, err)
		}
		el, err := element(html, open, closing)
		if err != nil {
			t.Fatalf("%s: %v:\n%s", path, err, html)
		}
		return el
	}
	// setUp is the first call on a context: it starts the browser or opens
	// the tab, under the context's own life (a timeout here would end it).
	setUp := func(ctx context.Context, headers network.Headers) {
		t.Helper()
		err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
				return err
			}
			if headers == nil {
				return nil
			}
			if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: headers})
			return err
		}))
		if err != nil {
			t.Fatalf("chromium: %v", err)
		}
	}
	setUp(browser, network.Headers{"Authorization": "Bearer " + harness.Suite(t).Tokens[access.Viewer]})

	t.Run("certificates", func(t *testing.T) {
		html := load(browser, "/certificates", `<table id="certificates"`, "</table>")
		for _, c := range certs.Items {
			row := between(t, html, `data-fingerprint="`+c.Fingerprint+`"`, "</tr>")
			for _, want := range []string{c.Subject, fmt.Sprintf("%d/%d", len(c.Nodes), len(status.ids())), "keywayctl certs --nodes"} {
				if !strings.Contains(row, want) {
					t.Errorf("certificate %s: the row does not show %q:\n%s", c.Fingerprint, want, row)
				}
			}
			// Revocation: the cell says what keywayctl certs's REVOCATION
			// column (its last) says, the state -o json gives, and under
			// it each node that checked.
			m := revocationCell.FindStringSubmatch(row)
			if m == nil {
				t.Errorf("certificate %s: no revocation cell in the row:\n%s", c.Fingerprint, row)
				continue
			}
			line := between(t, certsTable, c.Fingerprint[:min(23, len(c.Fingerprint))], "\n")
			if !strings.HasPrefix(m[1], c.Revocation) || !strings.HasSuffix(strings.TrimSpace(line), " "+m[1]) {
				t.Errorf("certificate %s: the page's revocation %q; keywayctl certs -o json says %q, and its table:\n%s", c.Fingerprint, m[1], c.Revocation, line)
			}
			for id, r := range c.RevocationByNode {
				if shown := strings.Contains(row, ">"+id+": "+r.State); shown != (r.State != "not checked" || r.Detail != "") {
					t.Errorf("certificate %s: node %s says %q (%s); the row shows it: %v:\n%s", c.Fingerprint, id, r.State, r.Detail, shown, row)
				}
			}
		}
		screenshot(browser, "certificates")
	})
	t.Run("nodes", func(t *testing.T) {
		html := load(browser, "/nodes", `<table id="nodes"`, "</table>")
		for _, n := range append(append([]nodeStatus(nil), status.Serving...), status.Pending...) {
			row := between(t, html, `data-node="`+n.ID+`"`, "</tr>")
			for _, want := range []string{n.ProxyAddress, fmt.Sprintf("<td>%d</td>", n.Revision), "keywayctl status"} {
				if !strings.Contains(row, want) {
					t.Errorf("node %s: the row does not show %q:\n%s", n.ID, want, row)
				}
			}
		}
		screenshot(browser, "nodes")
	})
	t.Run("bindings", func(t *testing.T) {
		var bindings struct {
			Items []struct {
				Metadata struct {
					Name     string
					Revision uint64 `json:",string"`
				}
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(ctl("get", "bindings", "-o", "json")), &bindings); err != nil {
			t.Fatal(err)
		}
		if len(bindings.Items) != 1 {
			t.Fatalf("keywayctl get bindings lists %d, want 1", len(bindings.Items))
		}
		html := load(browser, "/bindings", `<table id="bindings"`, "</table>")
		b := bindings.Items[0].Metadata
		row := between(t, html, `data-binding="`+b.Name+`"`, "</tr>")
		// The probe ran at apply: the endpoint answered TLS 1.3.
		for _, want := range []string{"tls-outbound", "Service orders", fmt.Sprintf("<td>%d</td>", b.Revision), up.Listener.Addr().String(), "TLS 1.3", "keywayctl get policybinding " + b.Name} {
			if !strings.Contains(row, want) {
				t.Errorf("the binding's row does not show %q:\n%s", want, row)
			}
		}
		screenshot(browser, "bindings")
	})
	t.Run("rollouts, live", func(t *testing.T) {
		html := load(browser, "/rollouts", `<table id="current"`, "</table>")
		row := between(t, html, fmt.Sprintf(`data-revision="%d"`, status.Revision), "</tr>")
		if !strings.Contains(row, "complete") || !strings.Contains(row, "2/2") {
			t.Errorf("the current rollout's row:\n%s", row)
		}
		screenshot(browser, "rollouts")
		// A change while the page is open: the page reloads by itself
		// (meta refresh; no script runs) and shows its rollout.
		ctl("delete", "route", "orders")
		var after rollout
		if err := json.Unmarshal([]byte(ctl("status", "-o", "json")), &after); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`data-revision="%d"`, after.Revision)
		testwait.Eventually(t, 20*time.Second, func() error {
			ctx, cancel := context.WithTimeout(browser, 5*time.Second)
			defer cancel()
			page, err := chromedp.Run(ctx, pageHTML)
			if err != nil {
				return err
			}
			html, err := element(page, `<table id="current"`, "</table>")
			if err != nil {
				return err
			}
			if !strings.Contains(html, want) {
				return fmt.Errorf("the open rollouts page does not show revision %d yet", after.Revision)
			}
			return nil
		})
		screenshot(browser, "rollouts-after-delete")
	})
	t.Run("refused without a credential", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(browser)
		defer cancel()
		setUp(tab, nil)
		html := load(tab, "/nodes", `<section class="problem" id="problem"`, "</section>")
		for _, want := range []string{"401", "no credential", "How to fix it", "client certificate"} {
			if !strings.Contains(html, want) {
				t.Errorf("the refusal page does not show %q:\n%s", want, html)
			}
		}
		screenshot(tab, "refused")
	})
}

// pageHTML is the page's HTML as the browser holds it (its DOM, read
// with the DOM domain of the protocol: no script runs in the page).
func pageHTML(ctx context.Context, tg *chromedp.Target) (string, error) {
	doc, err := cdp.Call(ctx, tg, dom.GetDocument, dom.GetDocumentParams{})
	if err != nil {
		return "", err
	}
	if doc.Root == nil {
		return "", errors.New("no document")
	}
	res, err := cdp.Call(ctx, tg, dom.GetOuterHTML, dom.GetOuterHTMLParams{BackendNodeID: doc.Root.BackendNodeID})
	return res.OuterHTML, err
}

// element is the element of html that opens with open (`<table id="x"`),
// up to its closing tag (tables and sections here do not nest).
func element(html, open, closing string) (string, error) {
	i := strings.Index(html, open)
	if i < 0 {
		return "", fmt.Errorf("no %s in the page", open)
	}
	j := strings.Index(html[i:], closing)
	if j < 0 {
		return "", fmt.Errorf("%s is not closed in the page", open)
	}
	return html[i : i+j+len(closing)], nil
}

// between is the text of s from the first start up to the next end.
// revocationCell is the certificates page's revocation cell, its text the
// fleet's state.
var revocationCell = regexp.MustCompile(`<td class="(?:bad|pending|ok|unknown)">([^<]*)`)

func between(t *testing.T, s, start, end string) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("no %s in:\n%s", start, s)
	}
	j := strings.Index(s[i:], end)
	if j < 0 {
		return s[i:]
	}
	return s[i : i+j]
}
