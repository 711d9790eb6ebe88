package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/testca"
)

// badCase is one bad input sent to the API: field is what the error must
// name (a field path, or the part of the request it is about).
type badCase struct {
	name  string
	field string
	call  func(ctx context.Context) error
}

// TestBadInputTable sends every kind of bad input the API must refuse, and
// checks for each that the error names the field, quotes at most a prefix
// of the value, and that nothing was stored; then that the service still
// applies a good resource and reports SERVING.
func TestBadInputTable(t *testing.T) {
	s := startStack(t)
	ctx := t.Context()
	c := s.connect
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		t.Helper()
		st, err := js.Stream(ctx, "KV_keyway-config")
		if err != nil {
			t.Fatalf("reading the configuration bucket's stream: %v", err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	// One Service stored first, so that bindings and routes have a target.
	if _, err := apply(ctx, c, false, service("orders", "orders.internal:9443")); err != nil {
		t.Fatal(err)
	}

	applyOne := func(r *policyv1.Resource) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{r}}))
			return err
		}
	}
	get := func(kind, name string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: kind, Name: name}))
			return err
		}
	}
	del := func(kind, name string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := c.Delete(ctx, connect.NewRequest(&policyv1.DeleteRequest{Kind: kind, Name: name}))
			return err
		}
	}
	raw := func(contentType string, body []byte) func(context.Context) error {
		return func(ctx context.Context) error { return postRaw(ctx, s.url, contentType, body) }
	}
	svc := func(mod func(*policyv1.Service)) *policyv1.Resource {
		r := service("bad", "bad.internal:443")
		mod(r.GetService())
		return r
	}
	rt := func(mod func(*policyv1.RouteSpec)) *policyv1.Resource {
		r := route("bad", "/bad/", "orders")
		mod(r.GetRoute().GetSpec())
		return r
	}
	listener := func(mod func(*policyv1.ListenerHost)) *policyv1.Resource {
		h := &policyv1.ListenerHost{Hostnames: []string{"api.example.com"}, Certificate: &policyv1.KeyPair{Keystore: "edge", Alias: "api"}}
		mod(h)
		return &policyv1.Resource{Kind: &policyv1.Resource_Listener{Listener: &policyv1.Listener{
			ApiVersion: "keyway.dev/v1alpha1", Kind: "Listener", Metadata: &policyv1.ObjectMeta{Name: "bad"},
			Spec: &policyv1.ListenerSpec{Address: "127.0.0.1:9443", Hosts: []*policyv1.ListenerHost{h}},
		}}}
	}
	bind := func(config map[string]any) *policyv1.Resource { return binding(t, "bad", "orders", config) }
	bindSpec := func(mod func(*policyv1.PolicyBindingSpec)) *policyv1.Resource {
		r := bind(map[string]any{"skipValidation": true})
		mod(r.GetPolicyBinding().GetSpec())
		return r
	}
	labels := func(l map[string]string) *policyv1.Resource {
		return svc(func(s *policyv1.Service) { s.Metadata.Labels = l })
	}
	long := func(n int) string { return strings.Repeat("a", n) }
	meg4 := strings.Repeat("x", 4<<20)
	ca := testca.New(t, "bad input CA")
	hugePEM := strings.Repeat(string(ca.CertPEM()), limits.BundlePEMBytes/len(ca.CertPEM())+1)
	manyLabels := map[string]string{}
	for i := range limits.Labels + 1 {
		manyLabels[fmt.Sprintf("l%d", i)] = "v"
	}
	deep := map[string]any{"leaf": "x"}
	for range limits.ConfigDepth + 1 {
		deep = map[string]any{"nested": deep}
	}
	wide := map[string]any{}
	for i := range limits.ConfigKeys + 1 {
		wide[fmt.Sprintf("k%d", i)] = "v"
	}
	manyResources := make([]*policyv1.Resource, 1001)
	for i := range manyResources {
		manyResources[i] = service(fmt.Sprintf("s%d", i), "s.internal:443")
	}
	unknownField := service("bad", "bad.internal:443")
	unknownField.GetService().GetSpec().ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	unknownTop := service("bad", "bad.internal:443")
	unknownTop.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	good := `{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"bad"},"spec":{"address":"bad.internal:443"}}`
	jsonApply := func(resource string) []byte { return []byte(`{"resources":[{"service":` + resource + `}]}`) }
	over := func(n int) []byte { // a Connect JSON Apply of n bytes
		pad := n - len(`{"resources":[{"service":{"metadata":{"name":""}}}]}`)
		return []byte(`{"resources":[{"service":{"metadata":{"name":"` + strings.Repeat("x", pad) + `"}}}]}`)
	}
	protoBody := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	cases := []badCase{
		// Names in Get, Delete and List, before they become KV keys.
		{"get name 4100 chars", "name", get("Service", long(4100))},
		{"get name 4 MB", "name", get("Service", meg4)},
		{"get name NUL", "name", get("Service", "ord\x00ers")},
		{"get name unicode", "name", get("Service", "ördérs")},
		{"get name path separator", "name", get("Service", "../orders")},
		{"get name wildcard *", "name", get("Service", "*")},
		{"get name wildcard >", "name", get("Service", ">")},
		{"get name dot", "name", get("Service", "orders.x")},
		{"get name empty", "name", get("Service", "")},
		{"get kind 4 MB", "kind", get(meg4, "orders")},
		{"delete name 4100 chars", "name", del("Service", long(4100))},
		{"delete name subject wildcard", "name", del("Service", "orders.>")},
		{"delete kind unknown", "kind", del("Servicez", "orders")},
		{"list kind 4100 chars", "kind", func(ctx context.Context) error {
			_, err := c.List(ctx, connect.NewRequest(&policyv1.ListRequest{Kind: long(4100)}))
			return err
		}},
		// metadata.name in Apply.
		{"apply name 4100 chars", "resources[0].service.metadata.name", applyOne(service(long(4100), "a.internal:443"))},
		{"apply name 4 MB", "resources[0].service.metadata.name", applyOne(service(meg4, "a.internal:443"))},
		{"apply name NUL", "resources[0].service.metadata.name", applyOne(service("a\x00b", "a.internal:443"))},
		{"apply name unicode", "resources[0].service.metadata.name", applyOne(service("ördérs", "a.internal:443"))},
		{"apply name path separator", "resources[0].service.metadata.name", applyOne(service("a/../b", "a.internal:443"))},
		{"apply name wildcard *", "resources[0].service.metadata.name", applyOne(service("*", "a.internal:443"))},
		{"apply name wildcard >", "resources[0].service.metadata.name", applyOne(service(">", "a.internal:443"))},
		{"apply name dot", "resources[0].service.metadata.name", applyOne(service("a.b", "a.internal:443"))},
		// Labels, as Kubernetes checks them.
		{"label name 64 chars", "metadata.labels", applyOne(labels(map[string]string{long(64): "v"}))},
		{"label prefix 254 chars", "metadata.labels", applyOne(labels(map[string]string{long(254) + "/app": "v"}))},
		{"label prefix not DNS", "metadata.labels", applyOne(labels(map[string]string{"Keyway_Dev/app": "v"}))},
		{"label value 64 chars", "metadata.labels", applyOne(labels(map[string]string{"app": long(64)}))},
		{"label value with space", "metadata.labels", applyOne(labels(map[string]string{"app": "a b"}))},
		{"label key empty", "metadata.labels", applyOne(labels(map[string]string{"": "v"}))},
		{"label key unicode", "metadata.labels", applyOne(labels(map[string]string{"tëam": "v"}))},
		{"label value 4 MB", "metadata.labels", applyOne(labels(map[string]string{"app": meg4}))},
		{"65 labels", "metadata.labels", applyOne(labels(manyLabels))},
		// Every string field at its maximum + 1.
		{"service address", "resources[0].service.spec.address", applyOne(svc(func(s *policyv1.Service) { s.Spec.Address = long(limits.AddressBytes+1-4) + ":443" }))},
		{"service endpoint", "resources[0].service.spec.endpoints[0]", applyOne(svc(func(s *policyv1.Service) {
			s.Spec.Address, s.Spec.Endpoints = "", []string{long(limits.AddressBytes + 1)}
		}))},
		{"service protocol", "resources[0].service.spec.protocol", applyOne(svc(func(s *policyv1.Service) { s.Spec.Protocol = long(limits.TokenBytes + 1) }))},
		{"service endpoints 257", "resources[0].service.spec.endpoints", applyOne(svc(func(s *policyv1.Service) {
			s.Spec.Address, s.Spec.Endpoints = "", strings.Split(strings.Repeat("a.internal:443,", limits.ListItems)+"a.internal:443", ",")
		}))},
		{"service apiVersion", "resources[0].service.apiVersion", applyOne(svc(func(s *policyv1.Service) { s.ApiVersion = long(limits.TokenBytes + 1) }))},
		{"service kind", "resources[0].service.kind", applyOne(svc(func(s *policyv1.Service) { s.Kind = meg4 }))},
		{"route path", "resources[0].route.spec.path", applyOne(rt(func(r *policyv1.RouteSpec) { r.Path = "/" + long(limits.PathBytes) }))},
		{"route method", "resources[0].route.spec.methods[0]", applyOne(rt(func(r *policyv1.RouteSpec) { r.Methods = []string{long(limits.TokenBytes + 1)} }))},
		{"route host", "resources[0].route.spec.host", applyOne(rt(func(r *policyv1.RouteSpec) { r.Host = long(limits.HostBytes + 1) }))},
		{"route service", "resources[0].route.spec.service", applyOne(rt(func(r *policyv1.RouteSpec) { r.Service = long(limits.NameBytes + 1) }))},
		{"route clientCertificate", "resources[0].route.spec.clientCertificate", applyOne(rt(func(r *policyv1.RouteSpec) { r.ClientCertificate = long(limits.TokenBytes + 1) }))},
		{"route allow uri", "resources[0].route.spec.allow[0].uri", applyOne(rt(func(r *policyv1.RouteSpec) { r.Allow = []*policyv1.IdentityRule{{Uri: long(limits.URIBytes + 1)}} }))},
		{"route allow spiffeID", "resources[0].route.spec.allow[0].spiffeID", applyOne(rt(func(r *policyv1.RouteSpec) {
			r.Allow = []*policyv1.IdentityRule{{SpiffeId: "spiffe://" + long(limits.URIBytes)}}
		}))},
		{"route allow dnsName", "resources[0].route.spec.allow[0].dnsName", applyOne(rt(func(r *policyv1.RouteSpec) { r.Allow = []*policyv1.IdentityRule{{DnsName: long(limits.HostBytes + 1)}} }))},
		{"route allow cn", "resources[0].route.spec.allow[0].cn", applyOne(rt(func(r *policyv1.RouteSpec) { r.Allow = []*policyv1.IdentityRule{{Cn: long(limits.TokenBytes + 1)}} }))},
		{"route allow ou", "resources[0].route.spec.allow[0].ou", applyOne(rt(func(r *policyv1.RouteSpec) { r.Allow = []*policyv1.IdentityRule{{Ou: long(limits.TokenBytes + 1)}} }))},
		{"route allow spkiSHA256", "resources[0].route.spec.allow[0].spkiSHA256", applyOne(rt(func(r *policyv1.RouteSpec) {
			r.Allow = []*policyv1.IdentityRule{{SpkiSha256: long(limits.TokenBytes + 1)}}
		}))},
		{"route listener name", "resources[0].route.spec.listeners[0]", applyOne(rt(func(r *policyv1.RouteSpec) { r.Listeners = []string{long(limits.NameBytes + 1)} }))},
		{"listener hostname", "resources[0].listener.spec.hosts[0].hostnames[0]", applyOne(listener(func(h *policyv1.ListenerHost) { h.Hostnames = []string{long(limits.HostBytes + 1)} }))},
		{"listener crt", "resources[0].listener.spec.hosts[0].certificate.crt", applyOne(listener(func(h *policyv1.ListenerHost) {
			h.Certificate = &policyv1.KeyPair{Crt: long(limits.CertificatePEMBytes + 1), Key: "k"}
		}))},
		{"listener key", "resources[0].listener.spec.hosts[0].certificate.key", applyOne(listener(func(h *policyv1.ListenerHost) {
			h.Certificate = &policyv1.KeyPair{Crt: "c", Key: long(limits.KeyPEMBytes + 1)}
		}))},
		{"listener keystore", "resources[0].listener.spec.hosts[0].certificate.keystore", applyOne(listener(func(h *policyv1.ListenerHost) { h.Certificate.Keystore = long(limits.SecretNameBytes + 1) }))},
		{"listener alias", "resources[0].listener.spec.hosts[0].certificate.alias", applyOne(listener(func(h *policyv1.ListenerHost) { h.Certificate.Alias = meg4 }))},
		{"listener clientCAs", "resources[0].listener.spec.hosts[0].clientCAs", applyOne(listener(func(h *policyv1.ListenerHost) { h.ClientCas = hugePEM }))},
		{"listener clientTruststore", "resources[0].listener.spec.hosts[0].clientTruststore", applyOne(listener(func(h *policyv1.ListenerHost) { h.ClientTruststore = long(limits.SecretNameBytes + 1) }))},
		{"listener clientAuth", "resources[0].listener.spec.hosts[0].clientAuth", applyOne(listener(func(h *policyv1.ListenerHost) { h.ClientAuth = long(limits.TokenBytes + 1) }))},
		{"listener minversion", "resources[0].listener.spec.hosts[0].minversion", applyOne(listener(func(h *policyv1.ListenerHost) { h.Minversion = long(limits.TokenBytes + 1) }))},
		{"listener cipher", "resources[0].listener.spec.hosts[0].ciphers[0]", applyOne(listener(func(h *policyv1.ListenerHost) { h.Ciphers = []string{long(limits.TokenBytes + 1)} }))},
		{"listener alpn", "resources[0].listener.spec.hosts[0].alpn[0]", applyOne(listener(func(h *policyv1.ListenerHost) { h.Alpn = []string{long(limits.ALPNBytes + 1)} }))},
		{"listener verifyDepth huge", "resources[0].listener.spec.hosts[0]", applyOne(listener(func(h *policyv1.ListenerHost) { h.VerifyDepth = 1 << 31 }))},
		{"binding targetRef name", "resources[0].policyBinding.spec.targetRef.name", applyOne(bindSpec(func(b *policyv1.PolicyBindingSpec) { b.TargetRef.Name = long(limits.NameBytes + 1) }))},
		{"binding targetRef kind", "resources[0].policyBinding.spec.targetRef.kind", applyOne(bindSpec(func(b *policyv1.PolicyBindingSpec) { b.TargetRef.Kind = meg4 }))},
		{"binding policyRef name", "resources[0].policyBinding.spec.policyRef.name", applyOne(bindSpec(func(b *policyv1.PolicyBindingSpec) { b.PolicyRef.Name = long(limits.NameBytes + 1) }))},
		{"binding huge PEM trustedCA", "resources[0].policyBinding.spec.config.trustedCA", applyOne(bind(map[string]any{"trustedCA": hugePEM}))},
		{"binding key 16 KiB + 1", "resources[0].policyBinding.spec.config.certificate.key", applyOne(bind(map[string]any{"certificate": map[string]any{"crt": "c", "key": long(limits.KeyPEMBytes + 1)}}))},
		{"binding sni", "resources[0].policyBinding.spec.config.sni", applyOne(bind(map[string]any{"sni": long(limits.HostBytes + 1)}))},
		{"binding config string 5 MB", "resources[0].policyBinding.spec.config.anything", applyOne(bind(map[string]any{"anything": strings.Repeat("y", 5<<20)}))},
		{"binding deep nesting", "resources[0].policyBinding.spec.config.nested", applyOne(bind(deep))},
		{"binding 65 config members", "resources[0].policyBinding.spec.config", applyOne(bind(wide))},
		{"binding config member name 4 MB", "resources[0].policyBinding.spec.config", applyOne(bind(map[string]any{meg4: "x"}))},
		// PEM that does not parse.
		{"malformed PEM trustedCA", "resources[0].policyBinding.spec.config.trustedCA", applyOne(bind(map[string]any{"trustedCA": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"}))},
		{"malformed PEM key", "resources[0].policyBinding.spec.config.certificate", applyOne(bind(map[string]any{"certificate": map[string]any{"crt": string(ca.CertPEM()), "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}}))},
		{"PEM of the wrong type", "resources[0].policyBinding.spec.config.trustedCA", applyOne(bind(map[string]any{"trustedCA": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}))},
		// What the CLI refuses: header, unknown fields and enums.
		{"missing apiVersion", "resources[0].service.apiVersion", applyOne(svc(func(s *policyv1.Service) { s.ApiVersion = "" }))},
		{"missing kind", "resources[0].service.kind", applyOne(svc(func(s *policyv1.Service) { s.Kind = "" }))},
		{"wrong kind", "resources[0].service.kind", applyOne(svc(func(s *policyv1.Service) { s.Kind = "Route" }))},
		{"unknown apiVersion", "resources[0].service.apiVersion", applyOne(svc(func(s *policyv1.Service) { s.ApiVersion = "keyway.dev/v9" }))},
		{"empty resource", "resources[0]", applyOne(&policyv1.Resource{})},
		{"unknown field (protobuf)", "resources[0].service.spec", applyOne(unknownField)},
		{"unknown field on the resource (protobuf)", "resources[0]", applyOne(unknownTop)},
		{"unknown field (JSON)", "resources[0].service.spec.adress", raw("application/json", jsonApply(`{"apiVersion":"keyway.dev/v1alpha1","kind":"Service","metadata":{"name":"bad"},"spec":{"adress":"bad.internal:443"}}`))},
		{"unknown field 4 MB name (JSON)", "resources[0].service.spec", raw("application/json", jsonApply(`{"metadata":{"name":"bad"},"spec":{"`+meg4+`":1}}`))},
		{"unknown member (JSON)", "resources[0].gateway", raw("application/json", []byte(`{"resources":[{"gateway":`+good+`}]}`))},
		{"unknown enum (JSON)", "probe", raw("application/json", []byte(`{"probe":"PROBE_MODE_MAYBE","resources":[{"service":`+good+`}]}`))},
		{"unknown enum (protobuf)", "probe", func(ctx context.Context) error {
			_, err := c.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Probe: 99, Resources: []*policyv1.Resource{service("bad", "bad.internal:443")}}))
			return err
		}},
		{"number too big for uint32 (JSON)", "resources[0].listener.spec.hosts[0].verifyDepth", raw("application/json", []byte(`{"resources":[{"listener":{"metadata":{"name":"bad"},"spec":{"hosts":[{"verifyDepth":99999999999}]}}}]}`))},
		{"negative uint32 (JSON)", "resources[0].listener.spec.hosts[0].verifyDepth", raw("application/json", []byte(`{"resources":[{"listener":{"metadata":{"name":"bad"},"spec":{"hosts":[{"verifyDepth":-1}]}}}]}`))},
		{"string where a list is (JSON)", "resources[0].service.spec.endpoints", raw("application/json", jsonApply(`{"metadata":{"name":"bad"},"spec":{"endpoints":"a:1"}}`))},
		// Numbers: ports and durations.
		{"port 99999", "resources[0].service.spec.address", applyOne(service("bad", "bad.internal:99999"))},
		{"port -1", "resources[0].service.spec.address", applyOne(service("bad", "bad.internal:-1"))},
		{"port 0", "resources[0].service.spec.address", applyOne(service("bad", "bad.internal:0"))},
		{"wait negative", "wait", func(ctx context.Context) error {
			_, err := c.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Wait: durationpb.New(-time.Second), Resources: []*policyv1.Resource{service("bad", "bad.internal:443")}}))
			return err
		}},
		{"wait 100 years", "wait", func(ctx context.Context) error {
			_, err := c.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Wait: durationpb.New(100 * 365 * 24 * time.Hour), Resources: []*policyv1.Resource{service("bad", "bad.internal:443")}}))
			return err
		}},
		{"wait out of range (JSON)", "wait", raw("application/json", []byte(`{"wait":"999999999999s","resources":[{"service":`+good+`}]}`))},
		{"watch timeout negative", "timeout", func(ctx context.Context) error {
			st, err := c.WatchRollout(ctx, connect.NewRequest(&policyv1.WatchRolloutRequest{Timeout: durationpb.New(-time.Second)}))
			if err != nil {
				return err
			}
			defer st.Close()
			for st.Receive() {
			}
			return st.Err()
		}},
		{"1001 resources", "resources", func(ctx context.Context) error {
			_, err := c.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{Resources: manyResources}))
			return err
		}},
		{"no resources", "resources", func(ctx context.Context) error {
			_, err := c.Apply(ctx, connect.NewRequest(&policyv1.ApplyRequest{}))
			return err
		}},
		// Bodies over the limit, refused before they are read.
		{"JSON body 30 MB", "request body", raw("application/json", over(30<<20))},
		{"JSON body just over 8 MiB", "request body", raw("application/json", over(limits.PolicyRequestBytes+1))},
		{"protobuf body 30 MB", "request body", raw("application/proto", protoBody(&policyv1.ApplyRequest{Resources: []*policyv1.Resource{service(strings.Repeat("z", 30<<20), "a:1")}}))},
	}
	before := lastSeq()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			err := tc.call(ctx)
			if err == nil {
				t.Fatalf("accepted; want an error naming %s", tc.field)
			}
			msg := err.Error()
			if ce := new(connect.Error); asConnect(err, &ce) {
				msg = ce.Message()
				for _, d := range ce.Details() {
					if v, derr := d.Value(); derr == nil {
						msg += "\n" + fmt.Sprint(v)
					}
				}
			}
			t.Logf("%.300s", msg)
			if !strings.Contains(msg, tc.field) {
				t.Errorf("the error does not name %s:\n%.600s", tc.field, msg)
			}
			// Bounded output: the largest bad value is megabytes; the
			// error quotes at most a prefix of it.
			if len(err.Error()) > 4096 {
				t.Errorf("the error is %d bytes long; an error quotes at most %d bytes of a value", len(err.Error()), limits.QuoteBytes)
			}
			if after := lastSeq(); after != before {
				t.Errorf("the configuration bucket moved from sequence %d to %d: something was stored", before, after)
			}
		})
	}
	t.Logf("bad-input table: %d cases through the API", len(cases))

	// The service is intact: NATS connected, a good resource applies,
	// and health says SERVING.
	if _, err := apply(ctx, c, false, service("still-works", "still.internal:443")); err != nil {
		t.Fatalf("after the table, a good apply fails: %v", err)
	}
	if _, err := c.Get(ctx, connect.NewRequest(&policyv1.GetRequest{Kind: "Service", Name: "still-works"})); err != nil {
		t.Fatalf("after the table, get fails: %v", err)
	}
	hr, err := healthpb.NewHealthClient(s.cc).Check(ctx, &healthpb.HealthCheckRequest{Service: policyv1connect.PolicyServiceName})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after the table: %v %v; want SERVING", hr.GetStatus(), err)
	}
	resp, err := c.List(ctx, connect.NewRequest(&policyv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Msg.GetResources() {
		if n := r.GetService().GetMetadata().GetName(); n != "orders" && n != "still-works" {
			t.Errorf("stored: %v", n)
		}
	}
}

func asConnect(err error, target **connect.Error) bool {
	return errors.As(err, target)
}

// postRaw sends body to Apply as a unary Connect request with contentType,
// and returns the error the service answered, with its message.
func postRaw(ctx context.Context, base, contentType string, body []byte) error {
	// By hand over one TCP connection: the service answers a body over its
	// limit before reading it and closes the connection, and net/http's
	// client reports the reset of its unfinished write instead of the
	// answer that came first. Here the answer is read while the body is
	// still being written.
	u, err := url.Parse(base)
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		policyv1connect.PolicyServiceApplyProcedure, u.Host, contentType, len(body))
	go func() {
		if _, err := io.WriteString(conn, head); err == nil {
			_, _ = conn.Write(body)
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("sending %d bytes: no answer: %w", len(body), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
}
