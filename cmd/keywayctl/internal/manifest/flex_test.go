package manifest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// The API instance of MuleSoft's policy development kit playground, as
// Flex Gateway's Local Mode takes it, with an https upstream, rules and a
// namespace; a resource-based https instance with a route binding to a
// Service; and a tls binding on it.
const flexInstances = `apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata:
  name: ingress-http
  namespace: e-commerce
spec:
  address: http://0.0.0.0:8081
  services:
    upstream:
      address: https://backend.example.com
      routes:
        - rules:
            - path: /api/users/.*
              methods: GET|POST
            - path: ^/api/[^/]+/items$
              host: api\.example\.com
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata:
  name: ingress-https
spec:
  address: https://0.0.0.0:8443
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: Service
metadata:
  name: jsonplaceholder
spec:
  address: https://jsonplaceholder.typicode.com:443/
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: ingress-https-route
spec:
  targetRef:
    name: ingress-https
  policyRef:
    name: route
  config:
    destinationRef:
      name: jsonplaceholder
  rules:
  - path: /comments/.*
    methods: GET
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: ingress-https-tls
spec:
  targetRef:
    kind: ApiInstance
    name: ingress-https
  policyRef:
    name: tls
  config:
    requireClientCertificate: true
`

// TestFlexResources: each Flex resource becomes the Keyway resources it
// means, each with a note saying so, and the fields of what was made point
// at what the user wrote.
func TestFlexResources(t *testing.T) {
	t.Parallel()
	m, err := Read([]string{write(t, "flex.yaml", flexInstances)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"service":{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"ingress-http-upstream"},"spec":{"address":"https://backend.example.com:443"}}}`,
		`{"route":{"apiVersion":"keyway.dev/v1alpha1","kind":"Route","metadata":{"name":"ingress-http-0"},"spec":{"path":"/api/users/","methods":["GET","POST"],"service":"ingress-http-upstream"}}}`,
		`{"route":{"apiVersion":"keyway.dev/v1alpha1","kind":"Route","metadata":{"name":"ingress-http-1"},"spec":{"path":"/api/{p1}/items","host":"api.example.com","service":"ingress-http-upstream"}}}`,
		`{"listener":{"apiVersion":"keyway.dev/v1alpha1","kind":"Listener","metadata":{"name":"ingress-https"},"spec":{"address":"0.0.0.0:8443"}}}`,
		`{"service":{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"jsonplaceholder"},"spec":{"address":"https://jsonplaceholder.typicode.com:443"}}}`,
		`{"route":{"apiVersion":"keyway.dev/v1alpha1","kind":"Route","metadata":{"name":"ingress-https-route-0"},"spec":{"path":"/comments/","methods":["GET"],"service":"jsonplaceholder","listeners":["ingress-https"]}}}`,
		`{"policyBinding":{"apiVersion":"gateway.mulesoft.com/v1alpha1","kind":"PolicyBinding","metadata":{"name":"ingress-https-tls"},"spec":{"targetRef":{"kind":"Listener","name":"ingress-https"},"policyRef":{"name":"tls"},"config":{"requireClientCertificate":true}}}}`,
	}
	if len(m) != len(want) {
		for _, d := range m {
			t.Log(mustJSON(t, d.Resource))
		}
		t.Fatalf("got %d resources, want %d", len(m), len(want))
	}
	for i, d := range m {
		if got := mustJSON(t, d.Resource); got != want[i] {
			t.Errorf("resource %d:\n got %s\nwant %s", i, got, want[i])
		}
	}

	var notes []string
	for _, n := range m.Notes() {
		notes = append(notes, n.String())
	}
	for _, w := range []string{
		"flex.yaml:1:1: Flex ApiInstance ingress-http → Service ingress-http-upstream at https://backend.example.com:443 (TLS verified against the system's trusted roots, as Flex does, until a tls-outbound PolicyBinding targets it), Route ingress-http-0 (GET,POST /api/users/), Route ingress-http-1 (/api/{p1}/items on host api.example.com). " +
			"Its address http://0.0.0.0:8081 is plain HTTP, which Keyway serves on each proxy node's plain-HTTP port (keyway-proxy --listen, 127.0.0.1:8080 by default), not per resource: 0.0.0.0:8081 is not opened",
		`flex.yaml:5:14: ApiInstance ingress-http: metadata.namespace "e-commerce" is dropped: Keyway has no namespaces`,
		"flex.yaml:18:1: Flex ApiInstance ingress-https → Listener ingress-https on 0.0.0.0:8443. The Listener binds 0.0.0.0:8443 on every proxy node, which is every interface",
		"Its certificate comes from the tls policy",
		"flex.yaml:30:12: Flex Service jsonplaceholder → Service jsonplaceholder at https://jsonplaceholder.typicode.com:443: TLS verified against the system's trusted roots",
		"flex.yaml:32:1: Flex PolicyBinding ingress-https-route (route) → Route ingress-https-route-0 (GET /comments/) to Service jsonplaceholder",
		"flex.yaml:48:1: Flex PolicyBinding ingress-https-tls (tls) → PolicyBinding ingress-https-tls on Listener ingress-https",
	} {
		if !strings.Contains(strings.Join(notes, "\n"), w) {
			t.Errorf("no note %q in:\n%s", w, strings.Join(notes, "\n"))
		}
	}
	if len(notes) != 6 {
		t.Errorf("%d notes, want one per Flex resource and one for the namespace:\n%s", len(notes), strings.Join(notes, "\n"))
	}

	// A violation the policy service reports in a made resource points at
	// the Flex field it came from.
	for _, tc := range []struct{ field, want string }{
		{"resources[1].route.spec.path", "flex.yaml:13:21"},
		{"resources[1].route.spec.methods[1]", "flex.yaml:14:24"},
		{"resources[2].route.spec.host", "flex.yaml:16:21"},
		{"resources[0].service.spec.address", "flex.yaml:10:16"},
		{"resources[0].service.metadata.name", "flex.yaml:9:5"},
		{"resources[3].listener.spec.address", "flex.yaml:23:12"},
		{"resources[6].policyBinding.spec.config.requireClientCertificate", "flex.yaml:59:31"},
		{"resources[6].policyBinding.spec.targetRef.name", "flex.yaml:55:11"},
	} {
		if _, pos, _ := m.Locate(tc.field); !strings.HasSuffix(pos.String(), "/"+tc.want) {
			t.Errorf("Locate(%s) = %s, want %s", tc.field, pos, tc.want)
		}
	}
}

// TestFlexAcrossFiles: Flex's configuration directory holds one resource a
// file; a route binding finds its ApiInstance in another file of the same
// apply.
func TestFlexAcrossFiles(t *testing.T) {
	t.Parallel()
	docs := strings.Split(flexInstances, "\n---\n")
	dir := t.TempDir()
	for i, d := range docs {
		if err := os.WriteFile(filepath.Join(dir, string(rune('a'+i))+".yaml"), []byte(d), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Read([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var route *policyv1.Route
	for _, d := range m {
		if r := d.Resource.GetRoute(); r.GetMetadata().GetName() == "ingress-https-route-0" {
			route = r
		}
	}
	if route == nil || len(route.GetSpec().GetListeners()) != 1 || route.GetSpec().GetListeners()[0] != "ingress-https" {
		t.Fatalf("route binding's Route = %v, want it on Listener ingress-https", route)
	}

	// Alone, the route binding cannot know where its routes serve.
	_, err = Read([]string{filepath.Join(dir, "d.yaml")}, nil)
	if err == nil || !strings.Contains(err.Error(), "d.yaml:7:11: spec.targetRef.name: ApiInstance ingress-https is not in this apply") {
		t.Fatalf("route binding alone: %v", err)
	}
}

// TestFlexRefusals: what Keyway would not do as Flex Gateway does is an
// error at the field, saying why and what to write instead; nothing is
// dropped silently.
func TestFlexRefusals(t *testing.T) {
	t.Parallel()
	instance := func(spec string) string {
		return "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: ApiInstance\nmetadata:\n  name: api\nspec:\n" + spec
	}
	binding := func(spec string) string {
		return "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: PolicyBinding\nmetadata:\n  name: b\nspec:\n" + spec
	}
	upstream := "  address: http://0.0.0.0:8081\n  services:\n    up:\n      address: https://up.internal:443\n"
	for _, tc := range []struct {
		name, input, want string
	}{
		{"destinationPath", instance(upstream + "      routes:\n        - config:\n            destinationPath: /anything/echo/\n"),
			`a.yaml:12:30: spec.services.up.routes[0].config.destinationPath "/anything/echo/": Flex Gateway prepends it to the path it forwards; Keyway routes forward the request path unchanged and rewrite nothing`},
		{"capture group", instance(upstream + "      routes:\n        - rules:\n            - path: /api(/users/.*)\n"),
			`a.yaml:12:21: spec.services.up.routes[0].rules[0].path "/api(/users/.*)": a capture group makes Flex Gateway forward only what it captures (path rewriting)`},
		{"header rule", instance(upstream + "      routes:\n        - rules:\n            - headers:\n                x-version: v2\n"),
			`a.yaml:13:17: spec.services.up.routes[0].rules[0].headers: Keyway routes match path, method and host, not headers`},
		{"prefix without a slash", instance(upstream + "      routes:\n        - rules:\n            - path: /orders.*\n"),
			`matches any path that starts with "/orders", even without a / after it`},
		{"methods regex", instance(upstream + "      routes:\n        - rules:\n            - methods: G.*\n"),
			`a.yaml:12:24: spec.services.up.routes[0].rules[0].methods "G.*": Keyway takes methods as a list`},
		{"base path", instance("  address: http://0.0.0.0:8080/json\n"),
			`a.yaml:6:12: spec.address: base path "/json": Flex Gateway serves the instance under it; Keyway routes forward the request path unchanged`},
		{"another policy", instance(upstream + "  policies:\n    - policyRef:\n        name: http-basic-authentication-flex\n      config: {username: chris, password: admin}\n"),
			`a.yaml:12:15: policy "http-basic-authentication-flex" has no Keyway equivalent`},
		{"tls on an http instance", instance(upstream + "  policies:\n    - policyRef:\n        name: tls\n"),
			`a.yaml:12:15: spec.policies[0]: the tls policy serves HTTPS, and spec.address "http://0.0.0.0:8081" is http://: write https://0.0.0.0:8081`},
		{"tls binding to an http instance", instance(upstream) + "---\n" + binding("  targetRef:\n    name: api\n  policyRef:\n    name: tls\n  config: {}\n"),
			`a.yaml:1:1) is http://, and the tls policy serves HTTPS`},
		{"tls-outbound on an instance", instance(upstream + "  policies:\n    - policyRef:\n        name: tls-outbound\n"),
			`spec.policies[0]: tls-outbound binds to an upstream Service, not to an ApiInstance: write a PolicyBinding with targetRef: {kind: Service, name: api-<service>}`},
		{"request rules on TLS", binding("  targetRef:\n    kind: Service\n    name: s\n  policyRef:\n    name: tls-outbound\n  config: {skipValidation: true}\n  rules:\n  - path: /x\n"),
			`a.yaml:13:3: rules: the tls-outbound policy applies to every connection, not to some requests`},
		{"a selector for every instance", binding("  targetRef:\n    kind: Selector\n    selector:\n      kind: ApiInstance\n  policyRef:\n    name: tls\n"),
			`a.yaml:7:11: spec.targetRef: a Selector binds the policy to every ApiInstance, now and later`},
		{"Kind spelled with a capital", binding("  targetRef:\n    Kind: Service\n    name: s\n  policyRef:\n    name: tls-outbound\n  config: {skipValidation: true}\n"),
			`a.yaml:7:5: spec.targetRef.Kind: unknown field; did you mean "kind"?`},
		{"an unknown spec field", instance(upstream + "  deployment: {replicas: 2}\n"),
			`a.yaml:10:3: spec.deployment: unknown field (Flex ApiInstance spec has address, services, policies)`},
		{"Configuration", "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Configuration\nmetadata: {name: logging}\nspec: {logging: {}}\n",
			`a.yaml:2:7: Flex Gateway's Configuration (logging, shared storage) has no Keyway resource`},
		{"a name over 64 characters", instance("  address: http://0.0.0.0:8081\n  services:\n    " + strings.Repeat("u", 62) + ":\n      address: https://up.internal:443\n"),
			`would be named "api-uuu`},
		{"ApiInstance without metadata", "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: ApiInstance",
			`a.yaml:1:1: ApiInstance: missing metadata.name`},
		{"Service with a path", "apiVersion: gateway.mulesoft.com/v1alpha1\nkind: Service\nmetadata: {name: s}\nspec:\n  address: https://s.internal/api\n",
			`a.yaml:5:12: spec.address: "https://s.internal/api" has a path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Read([]string{write(t, "a.yaml", tc.input)}, nil)
			if err == nil {
				t.Fatal("read succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tc.want)
			}
		})
	}
}

// TestFlexInlineServiceName: a tls-outbound binding that names an
// instance's service by its key is told the name Keyway gave it, in a note
// (a stored Service may have that name).
func TestFlexInlineServiceName(t *testing.T) {
	t.Parallel()
	m, err := Read([]string{write(t, "a.yaml", `apiVersion: gateway.mulesoft.com/v1alpha1
kind: ApiInstance
metadata: {name: api}
spec:
  address: http://0.0.0.0:8081
  services:
    up: {address: "https://up.internal:443"}
---
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata: {name: b}
spec:
  targetRef: {kind: Service, name: up}
  policyRef: {name: tls-outbound}
  config: {skipValidation: true}
`)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `a.yaml:13:36: spec.targetRef.name: no Service "up" in this apply; the service "up" of an ApiInstance's spec.services is named api-up, as Flex Gateway names it: if you meant it, target that`
	var notes []string
	for _, n := range m.Notes() {
		notes = append(notes, n.String())
	}
	if !strings.Contains(strings.Join(notes, "\n"), want) {
		t.Errorf("notes:\n%s\nwant one ending %s", strings.Join(notes, "\n"), want)
	}
}

// TestFlexPathTemplate: a Flex path rule becomes a template that matches
// the same paths, or none that the rule would not.
func TestFlexPathTemplate(t *testing.T) {
	t.Parallel()
	for re, want := range map[string]string{
		".*":                   "/",
		"/.*":                  "/",
		"^/orders$":            "/orders",
		"/orders/":             "/orders/{$}",
		"/orders/.*":           "/orders/",
		`/v1\.0/orders/[^/]+`:  "/v1.0/orders/{p1}",
		"/a/[^/]+/b/[^/]+/.*":  "/a/{p1}/b/{p2}/",
		"/file.json":           "/file.json",
		"/orders(/.*)":         "",
		"/orders.*":            "",
		"/orders/\\d+":         "",
		"orders/.*":            "",
		"/a|/b":                "",
		"/orders/{id}":         "",
		"/orders/[a-z]+":       "",
		"/orders/.+":           "",
		"/orders/[^/]+/.*/end": "",
	} {
		got, problem := flexPathTemplate(re)
		if got != want || (want == "") != (problem != "") {
			t.Errorf("flexPathTemplate(%q) = %q, %q; want %q", re, got, problem, want)
		}
	}
}

// TestCommentedPEMInManifest: the guide's samples keep their PEM lines
// commented out with '#'; pasted so, each field is refused at the line of
// its first commented boundary, with the fix.
func TestCommentedPEMInManifest(t *testing.T) {
	t.Parallel()
	_, err := Read([]string{write(t, "mtls.yaml", `apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: mtls-outbound
spec:
  targetRef:
    kind: Service
    name: ingress-test-outbound-upstream
  policyRef:
    name: tls-outbound
  config:
    skipValidation: false
    trustedCA: |
      # -----BEGIN CERTIFICATE-----
      # insert certificate
      # -----END CERTIFICATE-----
    certificate:
      key: "MIIE\n# -----END PRIVATE KEY-----\n"
`)}, nil)
	if err == nil {
		t.Fatal("read succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		`mtls.yaml:14:7: spec.config.trustedCA: the PEM block is commented out with '#': "# -----BEGIN CERTIFICATE-----"; in a YAML block scalar (|) a '#' does not start a comment, it is part of the PEM; remove the '#' (and the space after it) from the start of each line of the block, and put the PEM itself (from its -----BEGIN line to its -----END line) in place of the placeholder "# insert …" line`,
		`mtls.yaml:18:12: spec.config.certificate.key: the PEM block is commented out with '#' (line 2 of the value): "# -----END PRIVATE KEY-----"; in a YAML block scalar (|) a '#' does not start a comment, it is part of the PEM; remove the '#' (and the space after it) from the start of each line of the block`,
	}
	if len(lines) != len(want) || !strings.HasSuffix(lines[0], "/"+want[0]) || !strings.HasSuffix(lines[1], "/"+want[1]) {
		t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// TestCommentedClientCAs: a Listener's clientCAs is PEM too.
func TestCommentedClientCAs(t *testing.T) {
	t.Parallel()
	_, err := Parse("l.yaml", []byte(`apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata: {name: public}
spec:
  address: 127.0.0.1:9443
  hosts:
    - hostnames: [test.com]
      clientCAs: |
        -----BEGIN CERTIFICATE-----
        MIIB
        -----END CERTIFICATE-----
        #-----BEGIN CERTIFICATE-----
`))
	if err == nil || !strings.HasPrefix(err.Error(), "l.yaml:12:9: spec.hosts[0].clientCAs: the PEM block is commented out with '#': \"#-----BEGIN CERTIFICATE-----\"") {
		t.Errorf("error %v, want one at l.yaml:12:9", err)
	}
}

// write writes a file in a new directory and returns its path.
func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
