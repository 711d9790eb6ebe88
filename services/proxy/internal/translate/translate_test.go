package translate

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml with what translate produces")

// Each testdata/<case>.in.yaml is a bucket's history: its documents are
// stored resources, as manifests write them, applied in order at revisions
// 1, 2, …; a document {delete: <key>} deletes a key. <case>.out.yaml is
// what the Store translates to after the last one, in a form to read:
// every Upstream's input, the routes with the Upstream each resolves to,
// the Listeners with their tls-inbound bindings merged, the refusals, the
// secret references and who needs them, and what the last change
// invalidated. go test -run TestGolden -update rewrites the goldens.
func TestGolden(t *testing.T) {
	t.Parallel()
	ins, err := filepath.Glob(filepath.Join("testdata", "*.in.yaml"))
	if err != nil || len(ins) == 0 {
		t.Fatalf("no testdata/*.in.yaml: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, last := load(t, in)
			got, err := marshal(render(s, last))
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join("testdata", name+".out.yaml")
			if *update {
				if err := os.WriteFile(out, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(out)
			if err != nil {
				t.Fatalf("%v (go test -run TestGolden -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from what translate produces (go test -run TestGolden -update rewrites it after review):\n%s", out, lineDiff(string(want), string(got)))
			}
		})
	}
}

// change is the last change applied: its key and what it invalidated.
type change struct {
	key   string
	dirty *Dirty
}

// members maps a manifest's kind to its member of the Resource oneof.
var members = map[string]string{
	model.KindService: "service", model.KindRoute: "route", model.KindPolicyBinding: "policyBinding", model.KindListener: "listener",
}

// load applies the documents of path to a new Store.
func load(t *testing.T, path string) (*Store, change) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore()
	var last change
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for rev := uint64(1); ; rev++ {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: document %d: %v", path, rev, err)
		}
		d := NewDirty()
		if key, ok := doc["delete"].(string); ok {
			s.Delete(key, d)
			last = change{key: key, dirty: d}
			continue
		}
		member, ok := members[fmt.Sprint(doc["kind"])]
		if !ok {
			t.Fatalf("%s: document %d: kind %v is not a resource kind (or write {delete: KEY})", path, rev, doc["kind"])
		}
		j, err := json.Marshal(map[string]any{member: doc})
		if err != nil {
			t.Fatal(err)
		}
		var res policyv1.Resource
		if err := protojson.Unmarshal(j, &res); err != nil {
			t.Fatalf("%s: document %d: %v", path, rev, err)
		}
		obj, err := model.Decode(&res)
		if err != nil {
			t.Fatalf("%s: document %d: a node refuses it before translation: %v", path, rev, err)
		}
		key := configkv.Key(obj.Ref())
		s.Put(key, obj, rev, d)
		last = change{key: key, dirty: d}
	}
	return s, last
}

// The golden form: field order as declared, empty fields left out.
type (
	golden struct {
		Upstreams  []goldenUpstream    `yaml:"upstreams,omitempty"`
		Routes     []goldenRoute       `yaml:"routes,omitempty"`
		Listeners  []goldenListener    `yaml:"listeners,omitempty"`
		Refused    []goldenRefusal     `yaml:"refused,omitempty"`
		Secrets    map[string][]string `yaml:"secrets,omitempty"`
		LastChange goldenChange        `yaml:"lastChange"`
	}
	goldenUpstream struct {
		Service   string     `yaml:"service"`
		Upstream  string     `yaml:"upstream,omitempty"`
		Revision  uint64     `yaml:"revision,omitempty"`
		Endpoints []string   `yaml:"endpoints,omitempty"`
		Protocol  string     `yaml:"protocol,omitempty"`
		TLS       *goldenTLS `yaml:"tls,omitempty"`
	}
	goldenTLS struct {
		From            string   `yaml:"from"`
		Bindings        int      `yaml:"bindings,omitempty"`
		SkipValidation  bool     `yaml:"skipValidation,omitempty"`
		SystemRoots     bool     `yaml:"systemRoots,omitempty"`
		Truststore      string   `yaml:"truststore,omitempty"`
		TrustedCAs      int      `yaml:"trustedCAs,omitempty"`
		Certificate     string   `yaml:"certificate,omitempty"`
		SNI             string   `yaml:"sni,omitempty"`
		SubjectAltNames []string `yaml:"subjectAltNames,omitempty"`
		ALPN            []string `yaml:"alpn,omitempty"`
		Versions        string   `yaml:"versions,omitempty"`
		Needs           []string `yaml:"needs,omitempty"`
	}
	goldenRoute struct {
		Name              string   `yaml:"name"`
		Path              string   `yaml:"path,omitempty"`
		Host              string   `yaml:"host,omitempty"`
		Methods           []string `yaml:"methods,omitempty"`
		Listeners         []string `yaml:"listeners,omitempty"`
		ClientCertificate bool     `yaml:"clientCertificate,omitempty"`
		Allow             []string `yaml:"allow,omitempty"`
		Service           string   `yaml:"service"`
		Upstream          string   `yaml:"upstream"`
	}
	goldenListener struct {
		Name    string       `yaml:"name"`
		Address string       `yaml:"address"`
		Hosts   []goldenHost `yaml:"hosts,omitempty"`
	}
	goldenHost struct {
		Hostnames        []string `yaml:"hostnames,omitempty"`
		Default          bool     `yaml:"default,omitempty"`
		Certificate      string   `yaml:"certificate,omitempty"`
		ClientAuth       string   `yaml:"clientAuth,omitempty"`
		ClientTruststore string   `yaml:"clientTruststore,omitempty"`
		Needs            []string `yaml:"needs,omitempty"`
	}
	goldenRefusal struct {
		Key      string `yaml:"key"`
		Revision uint64 `yaml:"revision"`
		Listener string `yaml:"listener"`
		Error    string `yaml:"error"`
	}
	goldenChange struct {
		Key         string   `yaml:"key"`
		Services    []string `yaml:"invalidatesServices,omitempty"`
		Routes      bool     `yaml:"invalidatesRoutes,omitempty"`
		Listeners   bool     `yaml:"invalidatesListeners,omitempty"`
		Invalidates string   `yaml:"invalidates,omitempty"`
	}
)

func render(s *Store, last change) golden {
	var g golden
	// Every Service something names: stored, targeted by a binding, or
	// routed to.
	names := map[string]bool{}
	for key := range s.Keys() {
		o, _ := s.Get(key)
		switch {
		case o.Obj.Service != nil:
			names[o.Obj.Service.Name] = true
		case o.Obj.Route != nil:
			names[o.Obj.Route.Service] = true
		case o.Obj.Binding != nil && o.Obj.Binding.Target.Kind == model.KindService:
			names[o.Obj.Binding.Target.Name] = true
		}
		for _, sk := range SecretKeys(o.Obj) {
			if g.Secrets == nil {
				g.Secrets = map[string][]string{}
			}
			if g.Secrets[sk] == nil {
				g.Secrets[sk] = slices.Sorted(s.Users(sk))
			}
		}
	}
	for name := range names {
		names[name] = false
		in := s.Upstream(name)
		u := goldenUpstream{Service: name}
		if in.Service == nil {
			u.Upstream = "none: no Service is stored"
			g.Upstreams = append(g.Upstreams, u)
			continue
		}
		names[name] = true
		u.Revision, u.Endpoints, u.Protocol = in.ServiceRev, in.Service.Endpoints, in.Service.Protocol
		if o := in.TLS; o != nil {
			gt := &goldenTLS{
				From: "the Service's address (https://)", SkipValidation: o.SkipValidation, SystemRoots: o.SystemRoots,
				Truststore: o.Truststore, TrustedCAs: len(o.TrustedCAs), SNI: o.SNI, SubjectAltNames: o.SubjectAltNames,
				ALPN: o.ALPN, Versions: versions(o.MinVersion, o.MaxVersion), Needs: OutboundSecretKeys(o),
			}
			if in.Binding.Key != "" {
				gt.From = fmt.Sprintf("%s at revision %d", in.Binding.Key, in.Binding.Rev)
			}
			if in.Bindings > 1 {
				gt.Bindings = in.Bindings
			}
			gt.Certificate = certificate(o.CertificateRef, o.Certificate)
			u.TLS = gt
		}
		g.Upstreams = append(g.Upstreams, u)
	}
	slices.SortFunc(g.Upstreams, func(a, b goldenUpstream) int { return strings.Compare(a.Service, b.Service) })
	for _, r := range s.Routes() {
		gr := goldenRoute{
			Name: r.Name, Path: r.Path, Host: r.Host, Methods: r.Methods, Listeners: r.Listeners,
			ClientCertificate: r.ClientCertificate, Service: r.Service, Upstream: r.Service,
		}
		for _, a := range r.Allow {
			gr.Allow = append(gr.Allow, a.String())
		}
		if !names[r.Service] {
			gr.Upstream = "none: no Service is stored (requests answer no_healthy_upstream)"
		}
		g.Routes = append(g.Routes, gr)
	}
	listeners, refused := s.Listeners()
	for _, l := range listeners {
		gl := goldenListener{Name: l.Name, Address: l.Address}
		for i, h := range l.Hosts {
			gh := goldenHost{
				Hostnames: h.Hostnames, Default: i == l.Default, Certificate: certificate(h.CertificateRef, h.Certificate),
				ClientTruststore: h.ClientTruststore, Needs: HostSecretKeys(h),
			}
			if h.ClientAuth != tls.NoClientCert {
				gh.ClientAuth = h.ClientAuth.String()
			}
			gl.Hosts = append(gl.Hosts, gh)
		}
		g.Listeners = append(g.Listeners, gl)
	}
	for _, r := range refused {
		g.Refused = append(g.Refused, goldenRefusal{Key: r.Key, Revision: r.Rev, Listener: r.Listener, Error: r.Err.Error()})
	}
	g.LastChange = goldenChange{Key: last.key, Services: slices.Sorted(maps.Keys(last.dirty.Services)), Routes: last.dirty.Routes, Listeners: last.dirty.Listeners}
	if len(g.LastChange.Services) == 0 && !g.LastChange.Routes && !g.LastChange.Listeners {
		g.LastChange.Invalidates = "nothing"
	}
	return g
}

func certificate(ref *secretref.Ref, cert *tls.Certificate) string {
	switch {
	case ref != nil:
		return fmt.Sprintf("keystore %s alias %s (unresolved)", ref.Keystore, ref.Alias)
	case cert != nil:
		return "inline"
	}
	return ""
}

func versions(lo, hi uint16) string {
	if lo == 0 && hi == 0 {
		return ""
	}
	return tls.VersionName(lo) + " to " + tls.VersionName(hi)
}

func marshal(g golden) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# Written by go test -run TestGolden -update from the .in.yaml of the same name.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(g); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// lineDiff lists the lines of want and got that differ, by line number.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
		}
	}
	return b.String()
}
