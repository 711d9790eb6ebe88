package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	"keyway.dev/internal/testca"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// indent indents every line of a PEM block for a YAML literal block.
func indent(pem []byte, prefix string) string {
	lines := strings.Split(strings.TrimRight(string(pem), "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix)
}

// flexBinding is Flex Gateway's tls-outbound PolicyBinding exactly as Flex
// documents it, with PEMs minted for the test.
func flexBinding(t *testing.T) (yaml string, ca, crt, key []byte) {
	t.Helper()
	root := testca.New(t, "Keyway test CA")
	kp := root.Client("gateway")
	y := `apiVersion: gateway.mulesoft.com/v1alpha1
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
` + indent(root.CertPEM(), "      ") + `
    certificate:
      key: |
` + indent(kp.KeyPEM, "        ") + `
      crt: |
` + indent(kp.CertPEM, "        ") + `
    alpn: [h2, http/1.1]
    minversion: "1.2"
    maxversion: "1.3"
    ciphers: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
`
	return y, root.CertPEM(), kp.CertPEM, kp.KeyPEM
}

const services = `# two services
apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: orders
  labels:
    team: checkout
spec:
  address: 127.0.0.1:9443
  protocol: http1
---
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata: {name: orders-api}
spec:
  path: /orders/{id}
  methods: [GET, POST]
  service: orders
`

func TestParse(t *testing.T) {
	t.Parallel()
	flex, ca, crt, key := flexBinding(t)
	tests := []struct {
		name  string
		file  string
		input string
		// want is each resource in protojson, compared as values.
		want []string
	}{
		{
			name:  "multi-document YAML, empty documents skipped",
			file:  "app.yaml",
			input: services,
			want: []string{
				`{"service":{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"orders","labels":{"team":"checkout"}},"spec":{"address":"127.0.0.1:9443","protocol":"http1"}}}`,
				`{"route":{"apiVersion":"keyway.dev/v1alpha1","kind":"Route","metadata":{"name":"orders-api"},"spec":{"path":"/orders/{id}","methods":["GET","POST"],"service":"orders"}}}`,
			},
		},
		{
			name: "JSON file with tabs",
			file: "svc.json",
			input: "{\n\t\"apiVersion\": \"keyway.dev/v1alpha1\",\n\t\"kind\": \"Service\",\n\t\"metadata\": {\"name\": \"orders\"},\n" +
				"\t\"spec\": {\"address\": \"127.0.0.1:9443\", \"protocol\": \"h2\"}\n}\n",
			want: []string{`{"service":{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"orders"},"spec":{"address":"127.0.0.1:9443","protocol":"h2"}}}`},
		},
		{
			name:  "JSON with tabs on stdin",
			file:  "<stdin>",
			input: "{\"apiVersion\":\t\"keyway.dev/v1alpha1\", \"kind\": \"Service\",\n\t\"metadata\": {\"name\": \"orders\"}}",
			want:  []string{`{"service":{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"orders"}}}`},
		},
		{
			name:  "JSON list as get -o json prints it",
			file:  "list.json",
			input: `{"items": [{"apiVersion": "keyway.dev/v1alpha1", "kind": "Service", "metadata": {"name": "a", "revision": "4"}, "spec": {"address": "a:1"}}]}`,
			want:  []string{`{"service":{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"a","revision":"4"},"spec":{"address":"a:1"}}}`},
		},
		{
			name:  "wire shape as buf curl sends it, proto names accepted",
			file:  "wire.json",
			input: `{"policyBinding": {"api_version": "keyway.dev/v1alpha1", "kind": "PolicyBinding", "metadata": {"name": "b"}, "spec": {"target_ref": {"name": "orders"}, "policyRef": {"name": "tls-outbound"}, "config": {"sni": "orders.internal"}}}}`,
			want:  []string{`{"policyBinding":{"apiVersion":"keyway.dev/v1alpha1","kind":"PolicyBinding","metadata":{"name":"b"},"spec":{"targetRef":{"name":"orders"},"policyRef":{"name":"tls-outbound"},"config":{"sni":"orders.internal"}}}}`},
		},
		{
			name:  "anchors and merge keys",
			file:  "anchors.yaml",
			input: "apiVersion: keyway.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec:\n  <<: &common {service: orders, methods: [GET]}\n  path: /x\n",
			want:  []string{`{"route":{"apiVersion":"keyway.dev/v1alpha1","kind":"Route","metadata":{"name":"r"},"spec":{"path":"/x","methods":["GET"],"service":"orders"}}}`},
		},
		{
			name:  "Flex Gateway PolicyBinding passed through as written",
			file:  "flex.yaml",
			input: flex,
			want: []string{mustJSON(t, &policyv1.Resource{Kind: &policyv1.Resource_PolicyBinding{PolicyBinding: &policyv1.PolicyBinding{
				ApiVersion: "gateway.mulesoft.com/v1alpha1",
				Kind:       "PolicyBinding",
				Metadata:   &policyv1.ObjectMeta{Name: "orders-mtls"},
				Spec: &policyv1.PolicyBindingSpec{
					TargetRef: &policyv1.TargetRef{Kind: "Service", Name: "orders"},
					PolicyRef: &policyv1.PolicyRef{Name: "tls-outbound"},
					Config: mustStruct(t, map[string]any{
						"skipValidation": false,
						"trustedCA":      string(ca),
						"certificate":    map[string]any{"key": string(key), "crt": string(crt)},
						"alpn":           []any{"h2", "http/1.1"},
						"minversion":     "1.2",
						"maxversion":     "1.3",
						"ciphers":        []any{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
					}),
				},
			}}})},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			docs, err := Parse(tt.file, []byte(tt.input))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(docs) != len(tt.want) {
				t.Fatalf("got %d documents, want %d", len(docs), len(tt.want))
			}
			for i, d := range docs {
				want := new(policyv1.Resource)
				if err := protojson.Unmarshal([]byte(tt.want[i]), want); err != nil {
					t.Fatalf("bad want[%d]: %v", i, err)
				}
				if got := mustJSON(t, d.Resource); got != mustJSON(t, want) {
					t.Errorf("document %d:\n got %s\nwant %s", i, got, mustJSON(t, want))
				}
			}
		})
	}
}

func TestParseFlexService(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, address, want string
		tlsNote             bool
	}{
		{name: "https with port", address: "https://orders.internal:9443", want: "https://orders.internal:9443", tlsNote: true},
		{name: "https default port", address: "https://orders.internal", want: "https://orders.internal:443", tlsNote: true},
		{name: "http", address: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{name: "IPv6", address: "https://[::1]:9443/", want: "https://[::1]:9443", tlsNote: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  address: " + tt.address + "\n"
			docs, err := Parse("flex.yaml", []byte(in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			svc := docs[0].Resource.GetService()
			if svc.GetApiVersion() != "keyway.dev/v1alpha1" || svc.GetSpec().GetAddress() != tt.want {
				t.Errorf("got apiVersion %q address %q, want keyway.dev/v1alpha1 %q", svc.GetApiVersion(), svc.GetSpec().GetAddress(), tt.want)
			}
			if len(docs[0].Notes) != 1 {
				t.Fatalf("got notes %v, want one", docs[0].Notes)
			}
			note := docs[0].Notes[0].String()
			if !strings.HasPrefix(note, "flex.yaml:6:12: ") || strings.Contains(note, "verified against the system's trusted roots") != tt.tlsNote {
				t.Errorf("note %q: want at flex.yaml:6:12, TLS hint %v", note, tt.tlsNote)
			}
			if pos := docs[0].Locate("spec.address"); pos.String() != "flex.yaml:6:12" {
				t.Errorf("spec.address at %s, want flex.yaml:6:12", pos)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, input string
		want              []string // one line per problem
	}{
		{
			name:  "unknown kind in second document",
			file:  "app.yaml",
			input: services + "---\napiVersion: keyway.dev/v1alpha1\nkind: Gateway\nmetadata: {name: l}\n",
			want:  []string{`app.yaml:22:7: unknown kind "Gateway"; want Service, Route, PolicyBinding or Listener`},
		},
		{
			name:  "kind in the wrong case",
			file:  "a.yaml",
			input: "apiVersion: keyway.dev/v1alpha1\nkind: service\n",
			want:  []string{`a.yaml:2:7: unknown kind "service"; did you mean "Service"?`},
		},
		{
			name:  "unknown apiVersion",
			file:  "a.yaml",
			input: "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Route\n",
			want:  []string{`a.yaml:1:13: unknown apiVersion "gateway.mulesoft.com/v1alpha1" for kind Route; want keyway.dev/v1alpha1 (Flex Gateway's apiVersion takes ApiInstance, Service, PolicyBinding)`},
		},
		{
			name:  "missing kind",
			file:  "a.yaml",
			input: "apiVersion: keyway.dev/v1alpha1\nmetadata: {name: x}\n",
			want:  []string{`a.yaml:1:1: missing kind; want Service, Route, PolicyBinding or Listener`},
		},
		{
			name:  "unknown fields at the top and nested, wrong types, all at once",
			file:  "a.yaml",
			input: "apiVersion: keyway.dev/v1alpha1\nkind: Route\nstatus: {}\nmetadata:\n  name: 12\nspec:\n  pth: /x\n  methods: GET\n",
			want: []string{
				`a.yaml:3:1: status: unknown field (Route has apiVersion, kind, metadata, spec)`,
				`a.yaml:5:9: metadata.name: want a string, got the number 12; quote it: "12"`,
				`a.yaml:7:3: spec.pth: unknown field; did you mean "path"? (RouteSpec has path, methods, host, service, clientCertificate, allow, listeners)`,
				`a.yaml:8:12: spec.methods: want a list, got "GET"`,
			},
		},
		{
			name:  "duplicate key",
			file:  "a.yaml",
			input: "apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec:\n  address: a:1\n  address: b:1\n",
			want:  []string{`a.yaml:6:3: spec.address: duplicate key`},
		},
		{
			name:  "YAML syntax error",
			file:  "a.yaml",
			input: "apiVersion: keyway.dev/v1alpha1\nkind: Service\nspec:\n  address: [a\n",
			// The line is the YAML parser's: where the unclosed flow sequence's
			// context starts.
			want: []string{`a.yaml:3: invalid YAML: did not find expected ',' or ']'`},
		},
		{
			name:  "JSON with an unknown field",
			file:  "a.json",
			input: "{\"apiVersion\": \"keyway.dev/v1alpha1\", \"kind\": \"Service\",\n \"spec\": {\"adress\": \"a:1\"}}",
			want:  []string{`a.json:2:11: spec.adress: unknown field; did you mean "address"? (ServiceSpec has address, endpoints, protocol)`},
		},
		{
			name:  "Flex Service with an unsupported scheme",
			file:  "a.yaml",
			input: "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec:\n  address: h2c://a:1\n",
			want:  []string{`a.yaml:5:12: spec.address: scheme "h2c" is not supported; want http or https`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(tt.file, []byte(tt.input))
			if err == nil {
				t.Fatal("Parse succeeded, want errors")
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n got %q\nwant %q", got, tt.want)
			}
			var me *Error
			if !errors.As(err, &me) {
				t.Errorf("error %T is not a *manifest.Error", err)
			}
		})
	}
}

func TestLocate(t *testing.T) {
	t.Parallel()
	flex, _, _, _ := flexBinding(t)
	m, err := Parse("flex.yaml", []byte(services+"---\n"+flex))
	if err != nil {
		t.Fatal(err)
	}
	man := Manifest(m)
	// services is 19 lines and "---" one more: the binding starts on line 21.
	const b = 20
	lineOf := func(s string) int { // line of the first line containing s, in the binding
		for i, l := range strings.Split(flex, "\n") {
			if strings.Contains(l, s) {
				return b + i + 1
			}
		}
		t.Fatalf("no %q in binding", s)
		return 0
	}
	tests := []struct {
		field   string
		wantPos string
		wantRel string
	}{
		{field: "resources[0].service.spec.address", wantPos: "flex.yaml:9:12", wantRel: "spec.address"},
		{field: "resources[0].service.metadata.labels.team", wantPos: "flex.yaml:7:11", wantRel: "metadata.labels.team"},
		{field: `resources[0].service.metadata.labels["team"]`, wantPos: "flex.yaml:7:11", wantRel: `metadata.labels["team"]`},
		{field: "resources[0].service", wantPos: "flex.yaml:2:1", wantRel: ""},
		{field: "resources[1].route.spec.methods[1]", wantPos: "flex.yaml:18:18", wantRel: "spec.methods[1]"},
		{field: "resources[1].route.metadata.name", wantPos: "flex.yaml:15:18", wantRel: "metadata.name"},
		// Not written: falls back to the nearest written parent.
		{field: "resources[1].route.spec.host", wantPos: "flex.yaml:16:1", wantRel: "spec.host"},
		{field: "resources[2].policyBinding.spec.config.ciphers[0]", wantPos: "flex.yaml:" + itoa(lineOf("ciphers:")) + ":15", wantRel: "spec.config.ciphers[0]"},
		{field: "resources[2].policyBinding.spec.config.alpn[1]", wantPos: "flex.yaml:" + itoa(lineOf("alpn:")) + ":16", wantRel: "spec.config.alpn[1]"},
		{field: "resources[2].policyBinding.spec.config.certificate.crt", wantPos: "flex.yaml:" + itoa(lineOf("crt: |")) + ":12", wantRel: "spec.config.certificate.crt"},
		{field: "resources[2].policyBinding.spec.config.certificate", wantPos: "flex.yaml:" + itoa(lineOf("certificate:")) + ":5", wantRel: "spec.config.certificate"},
		{field: "resources[2].policyBinding.spec.config.certificate.crt.notAfter", wantPos: "flex.yaml:" + itoa(lineOf("crt: |")) + ":12", wantRel: "spec.config.certificate.crt.notAfter"},
		{field: "resources[2].policyBinding.spec.config.ciphers[7]", wantPos: "flex.yaml:" + itoa(lineOf("ciphers:")) + ":5", wantRel: "spec.config.ciphers[7]"},
		{field: "resources[2].policyBinding.spec.targetRef.name", wantPos: "flex.yaml:" + itoa(lineOf("targetRef:")+2) + ":11", wantRel: "spec.targetRef.name"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			t.Parallel()
			doc, pos, rel := man.Locate(tt.field)
			if doc == nil {
				t.Fatal("not located")
			}
			if pos.String() != tt.wantPos || rel != tt.wantRel {
				t.Errorf("got %s %q, want %s %q", pos, rel, tt.wantPos, tt.wantRel)
			}
		})
	}
	for _, field := range []string{"", "resources", "resources[3].service.spec", "resources[x]", "dryRun"} {
		if doc, _, _ := man.Locate(field); doc != nil {
			t.Errorf("Locate(%q) found a document, want none", field)
		}
	}
}

func TestRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("b.yaml", services)
	write("a.json", `{"apiVersion": "keyway.dev/v1alpha1", "kind": "Service", "metadata": {"name": "first"}, "spec": {"address": "a:1"}}`)
	write("notes.txt", "not a manifest")
	stdin := strings.NewReader("apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata: {name: piped}\nspec: {address: p:1}\n")

	m, err := Read([]string{dir, "-"}, stdin)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	var got []string
	for _, d := range m {
		got = append(got, d.Pos.String()+" "+d.Resource.GetService().GetMetadata().GetName()+d.Resource.GetRoute().GetMetadata().GetName())
	}
	want := []string{
		filepath.Join(dir, "a.json") + ":1:1 first",
		filepath.Join(dir, "b.yaml") + ":2:1 orders",
		filepath.Join(dir, "b.yaml") + ":13:1 orders-api",
		"<stdin>:1:1 piped",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("documents:\n got %q\nwant %q", got, want)
	}

	for name, paths := range map[string][]string{
		"missing file":    {filepath.Join(dir, "nope.yaml")},
		"empty directory": {t.TempDir()},
		"empty file":      {write("empty.yaml", "# nothing\n")},
	} {
		if _, err := Read(paths, strings.NewReader("")); err == nil {
			t.Errorf("%s: Read succeeded, want an error", name)
		}
	}
}

func mustJSON(t *testing.T, r *policyv1.Resource) string {
	t.Helper()
	b, err := protojson.MarshalOptions{}.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), " ", "") // protojson varies its spacing
}

// TestPositionBoundsTheFileName: an error prints the end of a very long
// file name (where the file's own name is), as valid UTF-8.
func TestPositionBoundsTheFileName(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("d\x8e/", 2000) + "routes.yaml"
	got := Position{File: name, Line: 3, Column: 7}.String()
	if len(got) > maxShownFile+len("…:3:7") {
		t.Errorf("position is %d bytes long, want at most %d", len(got), maxShownFile+len("…:3:7"))
	}
	if !strings.HasPrefix(got, "…") || !strings.HasSuffix(got, "/routes.yaml:3:7") || !utf8.ValidString(got) {
		t.Errorf("position = %q, want …<end of the name>/routes.yaml:3:7 in valid UTF-8", got)
	}
}

// endless is standard input, or a device, that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '#'
	}
	return len(p), nil
}

// Read stops at its bounds and says which input passed them and what to
// do: an endless standard input, a file that is too large, and files that
// are too large together. Nothing of a manifest that passes is returned.
// The bounds are Read's, but for the files: small ones, made smaller.
func TestReadBounds(t *testing.T) {
	t.Parallel()
	if m, err := Read([]string{Stdin}, endless{}); err == nil || len(m) != 0 ||
		!strings.Contains(err.Error(), "<stdin>: over 32 MiB") || !strings.Contains(err.Error(), "split it") {
		t.Errorf("endless stdin: %d documents, error %v", len(m), err)
	}
	if _, err := Read([]string{"/dev/zero"}, nil); err == nil || !strings.Contains(err.Error(), "/dev/zero: over 32 MiB") {
		t.Errorf("/dev/zero as a file: %v", err)
	}

	b := bounds{each: 1000, total: 2500}
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Repeat("#", n)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := b.read([]string{write("big.yaml", 1001)}, nil); err == nil || !strings.Contains(err.Error(), "big.yaml: over 1000 bytes") {
		t.Errorf("a file a byte over the bound: %v", err)
	}
	svc := "apiVersion: keyway.dev/v1alpha1\nkind: Service\nmetadata:\n  name: orders\nspec:\n  address: 127.0.0.1:9000\n#"
	fits := filepath.Join(dir, "fits.yaml")
	if err := os.WriteFile(fits, []byte(svc+strings.Repeat("#", 1000-len(svc))), 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := b.read([]string{fits}, nil); err != nil || len(m) != 1 {
		t.Errorf("a Service of 1000 bytes, at the bound: %d documents, %v", len(m), err)
	}
	// Three files just under the bound: the third passes the total.
	_, err := b.read([]string{write("parta.yaml", 999), write("partb.yaml", 999), write("partc.yaml", 999)}, nil)
	if err == nil || !strings.Contains(err.Error(), "partc.yaml: the manifests given pass 2500 bytes together") || strings.Contains(err.Error(), "partb.yaml") {
		t.Errorf("three files of 999 bytes against a total of 2500: %v", err)
	}
}
