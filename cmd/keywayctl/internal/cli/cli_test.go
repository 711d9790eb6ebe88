package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"keyway.dev/internal/testca"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// now is the clock of every test run.
var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// keywayctl runs a command in process against server.
func keywayctl(t *testing.T, server, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = Run(context.Background(), args, IO{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errOut,
		Getenv: func(k string) string {
			if k == ServerEnv {
				return server
			}
			return ""
		},
		Now: func() time.Time { return now },
	})
	return out.String(), errOut.String(), err
}

const appYAML = `apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: orders
spec:
  address: 127.0.0.1:9443
  protocol: h2
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: orders-api
spec:
  path: /orders/{id}
  methods: [GET]
  service: orders
`

// bindingYAML is Flex Gateway's tls-outbound binding with minted PEMs.
func bindingYAML(kp *testca.KeyPair, ca []byte) string {
	ind := func(pem []byte, prefix string) string {
		return prefix + strings.ReplaceAll(strings.TrimRight(string(pem), "\n"), "\n", "\n"+prefix)
	}
	return `apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: orders-mtls
spec:
  targetRef:
    kind: Service
    name: orders
  policyRef:
    name: tls-outbound
  config:
    skipValidation: false
    trustedCA: |
` + ind(ca, "      ") + `
    certificate:
      key: |
` + ind(kp.KeyPEM, "        ") + `
      crt: |
` + ind(kp.CertPEM, "        ") + `
    alpn: [h2, http/1.1]
    minversion: "1.2"
    maxversion: "1.3"
    ciphers: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
`
}

// manifests writes app.yaml and binding.yaml and returns their directory
// and the binding's line numbers by content.
func manifests(t *testing.T) (dir string, kp *testca.KeyPair, bindingLine func(string) int) {
	t.Helper()
	ca := testca.New(t, "Keyway test CA")
	kp = ca.Client("gateway")
	dir = t.TempDir()
	binding := bindingYAML(kp, ca.CertPEM())
	for name, content := range map[string]string{"app.yaml": appYAML, "binding.yaml": binding} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, kp, func(s string) int {
		for i, l := range strings.Split(binding, "\n") {
			if strings.Contains(l, s) {
				return i + 1
			}
		}
		t.Fatalf("no %q in binding.yaml", s)
		return 0
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"connect", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			dir, kp, line := manifests(t)
			fake := &fakePolicyService{decorate: func(i int, r *policyv1.ApplyResult) {
				if i != 2 {
					return
				}
				r.Warnings = []*policyv1.Warning{{
					Field:   "resources[2].policyBinding.spec.config.ciphers[0]",
					Message: "TLS 1.3 ignores ciphers; it applies only to TLS 1.2 connections",
				}}
				r.Certificates = []*policyv1.CertificateInfo{{
					Field:             "resources[2].policyBinding.spec.config.certificate.crt",
					Subject:           "CN=gateway",
					NotAfter:          timestamppb.New(now.Add(40 * 24 * time.Hour)),
					Sha256Fingerprint: kp.Fingerprint(),
				}}
			}}
			server := fake.serve(t)

			stdout, stderr, err := keywayctl(t, server, "", "apply", "--protocol", protocol,
				"-f", filepath.Join(dir, "app.yaml"), "-f", filepath.Join(dir, "binding.yaml"))
			if err != nil {
				t.Fatalf("apply: %v\n%s", err, stderr)
			}
			wantOut := `service/orders created (revision 1)
route/orders-api created (revision 2)
policybinding/orders-mtls created (revision 3)
certificate spec.config.certificate.crt: CN=gateway expires 2026-07-11T00:00:00Z (in 40 days), sha256 ` + kp.Fingerprint()[:16] + `…
`
			if stdout != wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, wantOut)
			}
			wantErr := "note: " + filepath.Join(dir, "binding.yaml") + ":1:1: Flex PolicyBinding orders-mtls (tls-outbound) → PolicyBinding orders-mtls on Service orders, as written\n" +
				"warning: " + filepath.Join(dir, "binding.yaml") + ":" + itoa(line("ciphers:")) +
				":15: spec.config.ciphers[0]: TLS 1.3 ignores ciphers; it applies only to TLS 1.2 connections\n"
			if stderr != wantErr {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
			}

			reqs := fake.requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d Apply requests, want one for all files", len(reqs))
			}
			if reqs[0].GetDryRun() || len(reqs[0].GetResources()) != 3 {
				t.Errorf("request: dry_run %v, %d resources; want false, 3", reqs[0].GetDryRun(), len(reqs[0].GetResources()))
			}
			if pb := reqs[0].GetResources()[2].GetPolicyBinding(); pb.GetApiVersion() != "gateway.mulesoft.com/v1alpha1" ||
				pb.GetSpec().GetConfig().GetFields()["certificate"].GetStructValue().GetFields()["crt"].GetStringValue() != string(kp.CertPEM) {
				t.Errorf("binding not sent as written: %v", pb)
			}
			if fake.protocols[0] != protocol {
				t.Errorf("server saw protocol %q, want %q", fake.protocols[0], protocol)
			}
		})
	}
}

func TestApplyDryRun(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"apply", "--dry-run"}, {"validate"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			dir, _, _ := manifests(t)
			fake := &fakePolicyService{}
			stdout, stderr, err := keywayctl(t, fake.serve(t), "", append(args, "-f", dir)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			want := "service/orders valid (dry run)\nroute/orders-api valid (dry run)\npolicybinding/orders-mtls valid (dry run)\n"
			if stdout != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
			}
			if reqs := fake.requests(); len(reqs) != 1 || !reqs[0].GetDryRun() {
				t.Errorf("got requests %v, want one with dry_run", reqs)
			}
		})
	}
}

// The live probe is on by default for apply, validate and import apigee,
// and keywayctl always says so explicitly: the service's default for a
// request that leaves it unset (dry runs only) must not decide.
func TestProbeFlags(t *testing.T) {
	t.Parallel()
	on, off := policyv1.ProbeMode_PROBE_MODE_ON, policyv1.ProbeMode_PROBE_MODE_OFF
	for _, tc := range []struct {
		args   []string
		want   policyv1.ProbeMode
		dryRun bool
		path   string
		note   bool // the deprecation note for --no-probe
	}{
		{args: []string{"apply"}, want: on},
		{args: []string{"apply", "--probe"}, want: on},
		{args: []string{"apply", "--probe=true"}, want: on},
		{args: []string{"apply", "--probe=false"}, want: off},
		{args: []string{"apply", "--no-probe"}, want: off, note: true},
		{args: []string{"apply", "--no-probe", "--probe=false"}, want: off, note: true},
		{args: []string{"apply", "--dry-run"}, want: on, dryRun: true},
		{args: []string{"apply", "--probe-path", "/healthz"}, want: on, path: "/healthz"},
		{args: []string{"validate"}, want: on, dryRun: true},
		{args: []string{"validate", "--probe=false"}, want: off, dryRun: true},
		{args: []string{"validate", "--no-probe"}, want: off, dryRun: true, note: true},
		{args: []string{"import", "apigee", apigeeFile}, want: on},
		{args: []string{"import", "apigee", apigeeFile, "--probe=false"}, want: off},
		{args: []string{"import", "apigee", apigeeFile, "--dry-run"}, want: on, dryRun: true},
		{args: []string{"import", "apigee", apigeeFile, "--no-probe"}, want: off, note: true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if args[0] != "import" {
				dir, _, _ := manifests(t)
				args = append(slices.Clone(args), "-f", dir)
			}
			fake := &fakePolicyService{}
			_, stderr, err := keywayctl(t, fake.serve(t), "", args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			reqs := fake.requests()
			if len(reqs) != 1 || reqs[0].GetProbe() != tc.want || reqs[0].GetDryRun() != tc.dryRun || reqs[0].GetProbePath() != tc.path {
				t.Errorf("got requests %v, want one with probe %v, dry_run %t, probe_path %q", reqs, tc.want, tc.dryRun, tc.path)
			}
			if got := strings.Contains(stderr, "note: --no-probe is deprecated: use --probe=false"); got != tc.note {
				t.Errorf("deprecation note printed: %t, want %t; stderr:\n%s", got, tc.note, stderr)
			}
		})
	}
}

// Contradictory flags are refused before anything is sent.
func TestProbeFlagConflicts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"apply", "--probe", "--no-probe"}, "--probe and --no-probe: give one"},
		{[]string{"apply", "--probe=false", "--probe-path", "/healthz"}, "--probe-path with --probe=false"},
		{[]string{"apply", "--dry-run", "--wait"}, "--wait and a dry run"},
		{[]string{"apply", "--probe=maybe"}, `invalid argument "maybe" for "--probe"`},
		{[]string{"validate", "--wait"}, "unknown flag: --wait"},
		{[]string{"validate", "--dry-run"}, "unknown flag: --dry-run"},
		{[]string{"import", "apigee", apigeeFile, "-o", "yaml", "--dry-run"}, "-o yaml and --dry-run"},
		{[]string{"import", "apigee", apigeeFile, "-o", "yaml", "--probe=false", "--wait"}, "-o yaml and --wait, --probe"},
		{[]string{"import", "apigee", apigeeFile, "--dry-run", "--wait"}, "--wait and a dry run"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if args[0] != "import" {
				dir, _, _ := manifests(t)
				args = append(slices.Clone(args), "-f", dir)
			}
			fake := &fakePolicyService{}
			_, stderr, err := keywayctl(t, fake.serve(t), "", args...)
			if err == nil || !strings.Contains(stderr, tc.want) {
				t.Errorf("err %v, stderr:\n%s\nwant %q", err, stderr, tc.want)
			}
			if n := len(fake.requests()); n != 0 {
				t.Errorf("%d requests sent, want none", n)
			}
		})
	}
}

// --help shows --probe with its default and hides the deprecated --no-probe.
func TestProbeFlagHelp(t *testing.T) {
	t.Parallel()
	for _, cmd := range [][]string{{"apply"}, {"validate"}, {"import", "apigee"}} {
		stdout, _, err := keywayctl(t, "http://127.0.0.1:1", "", append(cmd, "--help")...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stdout, "--probe ") || !strings.Contains(stdout, "(default true)") || strings.Contains(stdout, "--no-probe ") {
			t.Errorf("%s --help:\n%s", strings.Join(cmd, " "), stdout)
		}
	}
}

// An endpoint the policy service could not reach comes back as a warning
// and a probe line saying so; the apply succeeds.
func TestApplyPrintsUnreachableProbe(t *testing.T) {
	t.Parallel()
	dir, _, line := manifests(t)
	fake := &fakePolicyService{decorate: func(i int, r *policyv1.ApplyResult) {
		if i != 2 {
			return
		}
		r.Warnings = append(r.Warnings, &policyv1.Warning{Field: "resources[2].policyBinding.spec.config", Message: `live probe could not reach Service "orders" at 10.0.0.7:8443: connection_refused: dial tcp 10.0.0.7:8443: connect: connection refused`})
		r.Probes = append(r.Probes, &policyv1.ProbeResult{Endpoint: "10.0.0.7:8443", ServerName: "orders.internal", Reason: "connection_refused", Detail: "dial tcp 10.0.0.7:8443: connect: connection refused"})
	}}
	stdout, stderr, err := keywayctl(t, fake.serve(t), "", "apply", "-f", dir)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, stderr)
	}
	if want := "probe 10.0.0.7:8443 (SNI orders.internal): not reached: connection_refused: dial tcp 10.0.0.7:8443: connect: connection refused\n"; !strings.Contains(stdout, want) {
		t.Errorf("stdout lacks %q:\n%s", want, stdout)
	}
	want := "warning: " + filepath.Join(dir, "binding.yaml") + ":" + itoa(line("config:")) + ":"
	if !strings.Contains(stderr, want) || !strings.Contains(stderr, "could not reach") {
		t.Errorf("stderr lacks the warning at %s…:\n%s", want, stderr)
	}
}

func TestApplyInvalid(t *testing.T) {
	t.Parallel()
	dir, _, line := manifests(t)
	violations := []*errdetails.BadRequest_FieldViolation{
		{Field: "resources[0].service.spec.address", Description: `"127.0.0.1:9443" is not reachable: connection refused; start the upstream or fix the address`},
		{Field: "resources[1].route", Description: "conflicts with route/legacy (GET /orders/{id}); change the path or delete route/legacy"},
		{Field: "resources[2].policyBinding.spec.config.ciphers[0]", Description: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 needs an ECDSA certificate; the certificate's key is RSA: use an ECDHE_RSA cipher"},
		{Field: "resources[2].policyBinding.spec.config.sni", Description: "sni: required when skipValidation is false and the address is an IP"},
		{Field: "resources[2].policyBinding.spec.targetRef.name", Description: `Service "orders" does not exist; apply it in the same request or fix the name`},
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New("3 resources invalid"))
	detail, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: violations})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(detail)
	warnings, err := connect.NewErrorDetail(&policyv1.Warnings{Warnings: []*policyv1.Warning{
		{Field: "resources[2].policyBinding.spec.config.ciphers[0]", Message: "weak suite"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cerr.AddDetail(warnings)
	fake := &fakePolicyService{applyErr: cerr}

	stdout, stderr, err := keywayctl(t, fake.serve(t), "", "apply", "-f", dir)
	if err == nil {
		t.Fatal("apply succeeded, want an error")
	}
	app, binding := filepath.Join(dir, "app.yaml"), filepath.Join(dir, "binding.yaml")
	want := strings.Join([]string{
		"note: " + binding + ":1:1: Flex PolicyBinding orders-mtls (tls-outbound) → PolicyBinding orders-mtls on Service orders, as written",
		"warning: " + binding + ":" + itoa(line("ciphers:")) + ":15: spec.config.ciphers[0]: weak suite",
		"error: " + app + `:6:12: spec.address: "127.0.0.1:9443" is not reachable: connection refused; start the upstream or fix the address`,
		"error: " + app + ":9:1: route/orders-api: conflicts with route/legacy (GET /orders/{id}); change the path or delete route/legacy",
		// In file order, whatever order the server sent them in.
		"error: " + binding + ":" + itoa(line("targetRef:")+2) + ":11: spec.targetRef.name: Service \"orders\" does not exist; apply it in the same request or fix the name",
		// sni was not written: the nearest written parent is config.
		"error: " + binding + ":" + itoa(line("config:")) + ":3: spec.config.sni: sni: required when skipValidation is false and the address is an IP",
		"error: " + binding + ":" + itoa(line("ciphers:")) + ":15: spec.config.ciphers[0]: TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 needs an ECDSA certificate; the certificate's key is RSA: use an ECDHE_RSA cipher",
		"error: nothing applied: 5 problems",
	}, "\n") + "\n"
	if stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
}

func TestApplyManifestErrors(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{}
	server := fake.serve(t)
	in := "apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {address: a:1}\n---\napiVersion: keyway.dev/v1alpha1\nkind: Gateway\n"
	_, stderr, err := keywayctl(t, server, in, "apply", "-f", "-")
	if err == nil {
		t.Fatal("apply succeeded, want an error")
	}
	if want := "error: <stdin>:7:7: unknown kind \"Gateway\"; want Service, Route, PolicyBinding or Listener\nerror: nothing sent: 1 problem in the manifests\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	if n := len(fake.requests()); n != 0 {
		t.Errorf("sent %d requests, want none: a manifest with a problem is not applied in part", n)
	}
}

func TestApplyFlexServiceNote(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{}
	in := "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Service\nmetadata: {name: orders}\nspec:\n  address: https://orders.internal:9443\n"
	stdout, stderr, err := keywayctl(t, fake.serve(t), in, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.HasPrefix(stderr, "note: <stdin>:5:12: Flex Service orders → Service orders at https://orders.internal:9443: TLS verified against the system's trusted roots") {
		t.Errorf("stderr %q, want a note at <stdin>:5:12 about TLS with the system roots", stderr)
	}
	if stdout != "service/orders created (revision 1)\n" {
		t.Errorf("stdout %q", stdout)
	}
	if got := fake.requests()[0].GetResources()[0].GetService().GetSpec().GetAddress(); got != "https://orders.internal:9443" {
		t.Errorf("sent address %q, want https://orders.internal:9443", got)
	}
}

// stored is what the fake holds for get tests.
func stored(t *testing.T) []*policyv1.Resource {
	t.Helper()
	meta := func(name string, rev uint64, age time.Duration) *policyv1.ObjectMeta {
		return &policyv1.ObjectMeta{Name: name, Revision: rev, UpdateTime: timestamppb.New(now.Add(-age))}
	}
	config, err := structpb.NewStruct(map[string]any{"minversion": "1.2", "alpn": []any{"h2"}, "trustedCA": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})
	if err != nil {
		t.Fatal(err)
	}
	return []*policyv1.Resource{
		{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: meta("orders", 4, 3*time.Hour),
			Spec: &policyv1.ServiceSpec{Address: "127.0.0.1:9443", Protocol: "h2"}}}},
		{Kind: &policyv1.Resource_Service{Service: &policyv1.Service{ApiVersion: "keyway.dev/v1alpha1", Kind: "Service", Metadata: meta("payments", 9, 50*time.Second),
			Spec: &policyv1.ServiceSpec{Endpoints: []string{"10.0.0.1:443", "10.0.0.2:443"}}}}},
		{Kind: &policyv1.Resource_Route{Route: &policyv1.Route{ApiVersion: "keyway.dev/v1alpha1", Kind: "Route", Metadata: meta("orders-api", 5, 72*time.Hour),
			Spec: &policyv1.RouteSpec{Path: "/orders/{id}", Methods: []string{"GET", "POST"}, Service: "orders"}}}},
		{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{ApiVersion: "gateway.mulesoft.com/v1alpha1", Kind: "PolicyBinding", Metadata: meta("orders-mtls", 7, 90*time.Minute),
			Spec: &policyv1.PolicyBindingSpec{TargetRef: &policyv1.TargetRef{Kind: "Service", Name: "orders"}, PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"}, Config: config}}}},
	}
}

func TestGetTable(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{stored: stored(t)}
	server := fake.serve(t)
	tests := []struct {
		args []string
		want string
	}{
		{
			args: []string{"get", "svc"},
			want: `NAME       ADDRESS                     PROTOCOL   REVISION   AGE
orders     127.0.0.1:9443              h2         4          3h
payments   10.0.0.1:443,10.0.0.2:443   http1      9          50s
`,
		},
		{
			args: []string{"get", "Routes"},
			want: `NAME         HOST   PATH           METHODS    SERVICE   REVISION   AGE
orders-api   *      /orders/{id}   GET,POST   orders    5          3d
`,
		},
		{
			args: []string{"get", "pb/orders-mtls"},
			want: `NAME          TARGET           POLICY         REVISION   AGE
orders-mtls   Service/orders   tls-outbound   7          90m
`,
		},
		{
			args: []string{"get", "all", "--protocol", "grpc"},
			want: `NAME               ADDRESS                     PROTOCOL   REVISION   AGE
service/orders     127.0.0.1:9443              h2         4          3h
service/payments   10.0.0.1:443,10.0.0.2:443   http1      9          50s

NAME               HOST   PATH           METHODS    SERVICE   REVISION   AGE
route/orders-api   *      /orders/{id}   GET,POST   orders    5          3d

NAME                        TARGET           POLICY         REVISION   AGE
policybinding/orders-mtls   Service/orders   tls-outbound   7          90m
`,
		},
		{args: []string{"get", "bindings", "-o", "name"}, want: "policybinding/orders-mtls\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			stdout, stderr, err := keywayctl(t, server, "", tt.args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if stdout != tt.want {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, tt.want)
			}
		})
	}
}

func TestGetJSON(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{stored: stored(t)}
	server := fake.serve(t)

	// One resource: an object in manifest shape.
	stdout, stderr, err := keywayctl(t, server, "", "get", "binding", "orders-mtls", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	var one struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name     string `json:"name"`
			Revision string `json:"revision"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal([]byte(stdout), &one); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, stdout)
	}
	if one.APIVersion != "gateway.mulesoft.com/v1alpha1" || one.Kind != "PolicyBinding" || one.Metadata.Name != "orders-mtls" || one.Metadata.Revision != "7" {
		t.Errorf("get -o json: %+v", one)
	}

	// A list, even of one or none: {"items": [...]}.
	for args, wantNames := range map[string][]string{
		"get services -o json": {"orders", "payments"},
		"get route -o json":    {"orders-api"},
		"get all -o json":      {"orders", "payments", "orders-api", "orders-mtls"},
	} {
		stdout, stderr, err := keywayctl(t, server, "", strings.Fields(args)...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", args, err, stderr)
		}
		var list struct {
			Items []struct {
				Metadata struct{ Name string } `json:"metadata"`
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(stdout), &list); err != nil {
			t.Fatalf("%s: %v\n%s", args, err, stdout)
		}
		var names []string
		for _, it := range list.Items {
			names = append(names, it.Metadata.Name)
		}
		if strings.Join(names, ",") != strings.Join(wantNames, ",") {
			t.Errorf("%s: items %v, want %v", args, names, wantNames)
		}
	}

	empty := &fakePolicyService{}
	emptyServer := empty.serve(t)
	if stdout, _, err := keywayctl(t, emptyServer, "", "get", "svc", "-o", "json"); err != nil || stdout != "{\n  \"items\": []\n}\n" {
		t.Errorf("empty list: %q, %v; want {\"items\": []}", stdout, err)
	}
	if stdout, stderr, err := keywayctl(t, emptyServer, "", "get", "svc"); err != nil || stdout != "" || stderr != "No resources found.\n" {
		t.Errorf("empty table: %q %q %v", stdout, stderr, err)
	}
}

// TestGetYAMLRoundTrip pipes `get all -o yaml` into `apply -f -`: the apply
// must send exactly what get returned.
func TestGetYAMLRoundTrip(t *testing.T) {
	t.Parallel()
	want := stored(t)
	fake := &fakePolicyService{stored: want}
	server := fake.serve(t)
	yamlOut, stderr, err := keywayctl(t, server, "", "get", "all", "-o", "yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(yamlOut, "trustedCA: |\n") {
		t.Errorf("PEM not printed as a literal block:\n%s", yamlOut)
	}
	if !strings.Contains(yamlOut, `minversion: "1.2"`) {
		t.Errorf("string that looks like a number not quoted:\n%s", yamlOut)
	}
	if _, stderr, err := keywayctl(t, server, yamlOut, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply of get -o yaml: %v\n%s\n%s", err, stderr, yamlOut)
	}
	got := fake.requests()[0].GetResources()
	if len(got) != len(want) {
		t.Fatalf("applied %d resources, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("resource %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		err     error
		args    []string
		wantOut string
		wantErr string
	}{
		{name: "deleted", args: []string{"delete", "pb", "orders-mtls"}, wantOut: "policybinding/orders-mtls deleted (revision 1)\n"},
		{name: "kind/name", args: []string{"delete", "Route/orders-api"}, wantOut: "route/orders-api deleted (revision 1)\n"},
		{
			name:    "in use",
			err:     connect.NewError(connect.CodeFailedPrecondition, errors.New("Service/orders is still used by Route/orders-api, PolicyBinding/orders-mtls; delete or re-point those first")),
			args:    []string{"delete", "service", "orders"},
			wantErr: "error: cannot delete service/orders: Service/orders is still used by Route/orders-api, PolicyBinding/orders-mtls; delete or re-point those first\n",
		},
		{
			name:    "missing",
			err:     connect.NewError(connect.CodeNotFound, errors.New("no such service")),
			args:    []string{"delete", "svc", "nope"},
			wantErr: "error: service/nope not found\n",
		},
		{
			name:    "no name",
			args:    []string{"delete", "svc"},
			wantErr: "error: missing NAME: give KIND NAME or KIND/NAME ('keywayctl get services' lists the names)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fake := &fakePolicyService{deleteErr: tt.err}
			stdout, stderr, err := keywayctl(t, fake.serve(t), "", tt.args...)
			if (err != nil) != (tt.wantErr != "") || stdout != tt.wantOut || stderr != tt.wantErr {
				t.Errorf("got stdout %q stderr %q err %v\nwant stdout %q stderr %q", stdout, stderr, err, tt.wantOut, tt.wantErr)
			}
		})
	}
}

func TestGetNotFound(t *testing.T) {
	t.Parallel()
	fake := &fakePolicyService{}
	_, stderr, err := keywayctl(t, fake.serve(t), "", "get", "svc", "orders")
	if want := "error: service/orders not found ('keywayctl get services' lists them)\n"; err == nil || stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, protocol := range []string{"connect", "grpc"} {
		_, stderr, err := keywayctl(t, "http://"+addr, "", "get", "svc", "--protocol", protocol)
		if err == nil || !strings.Contains(stderr, "is the policy service running? (make run starts it") {
			t.Errorf("%s: stderr %q, want the hint to start the policy service", protocol, stderr)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"get"}, "error: missing KIND: service (svc), route (rt) or policybinding (binding, pb); plurals too\n"},
		{[]string{"get", "gateways"}, `error: unknown kind "gateways"; want service (svc), route (rt), policybinding (binding, pb), listener (lis) or all` + "\n"},
		{[]string{"get", "svc", "-o", "xml"}, `error: unknown output format "xml"; want table, yaml, json or name` + "\n"},
		{[]string{"apply"}, "error: no manifests: give -f FILE (a file, a directory, or - for stdin)\n"},
		{[]string{"get", "svc", "--protocol", "http3"}, `error: --protocol "http3": want connect or grpc` + "\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			_, stderr, err := keywayctl(t, "http://127.0.0.1:1", "", tt.args...)
			if err == nil || !strings.HasPrefix(stderr, tt.want) {
				t.Errorf("stderr %q, want it to start %q", stderr, tt.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args               []string
		wantKind, wantName string
	}{
		{[]string{"svc"}, "Service", ""},
		{[]string{"Services", "orders"}, "Service", "orders"},
		{[]string{"SERVICE/orders"}, "Service", "orders"},
		{[]string{"route"}, "Route", ""},
		{[]string{"routes", "r"}, "Route", "r"},
		{[]string{"PolicyBinding", "b"}, "PolicyBinding", "b"},
		{[]string{"policybindings"}, "PolicyBinding", ""},
		{[]string{"binding/b"}, "PolicyBinding", "b"},
		{[]string{"Bindings"}, "PolicyBinding", ""},
		{[]string{"pb", "b"}, "PolicyBinding", "b"},
	}
	for _, tt := range tests {
		k, name, err := parseTarget(tt.args, false)
		if err != nil || k.Name != tt.wantKind || name != tt.wantName {
			t.Errorf("parseTarget(%q) = %s %q %v, want %s %q", tt.args, k.Name, name, err, tt.wantKind, tt.wantName)
		}
	}
	if _, _, err := parseTarget([]string{"svc/a", "b"}, false); err == nil {
		t.Error("parseTarget(svc/a b) succeeded, want an error")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
