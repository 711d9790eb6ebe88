// Package deploy checks the deployment files offline: the Kubernetes
// manifests are rendered with kustomize (its Go API, as `kustomize build`
// does) and every object is decoded strictly into the Kubernetes API types
// (unknown or misspelt fields fail), then cross-checked (selectors, the
// objects they name); compose.yaml is loaded with the compose-spec loader,
// which validates it against the Compose schema; Vault's configuration is
// parsed as HCL. Run by `make deploy-check` and `make test`.
package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/hashicorp/hcl"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// render runs kustomize over dir and decodes every object strictly.
func render(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := decoder.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s %s: %v", r.GetKind(), r.GetName(), err)
			continue
		}
		if gvk.Kind != r.GetKind() {
			t.Errorf("%s %s decoded as %s", r.GetKind(), r.GetName(), gvk.Kind)
		}
		objs = append(objs, obj)
	}
	return objs
}

func TestKubernetesManifests(t *testing.T) {
	objs := render(t, "kubernetes")
	byKind := map[string][]string{}
	configMaps, services, serviceAccounts := map[string]bool{}, map[string]bool{}, map[string]bool{}
	type workload struct {
		kind, name string
		labels     map[string]string
		spec       corev1.PodSpec
	}
	var workloads []workload
	var hpas []*autoscalingv2.HorizontalPodAutoscaler
	var selectors []struct {
		what string
		sel  map[string]string
	}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			configMaps[o.Name] = true
		case *corev1.ServiceAccount:
			serviceAccounts[o.Name] = true
		case *corev1.Service:
			services[o.Name] = true
			selectors = append(selectors, struct {
				what string
				sel  map[string]string
			}{"Service " + o.Name, o.Spec.Selector})
			for _, p := range o.Spec.Ports {
				if p.TargetPort.StrVal == "" && p.TargetPort.IntVal == 0 {
					t.Errorf("Service %s port %s: no targetPort", o.Name, p.Name)
				}
			}
		case *appsv1.Deployment:
			checkSelector(t, "Deployment "+o.Name, o.Spec.Selector.MatchLabels, o.Spec.Template.Labels)
			workloads = append(workloads, workload{"Deployment", o.Name, o.Spec.Template.Labels, o.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			checkSelector(t, "StatefulSet "+o.Name, o.Spec.Selector.MatchLabels, o.Spec.Template.Labels)
			workloads = append(workloads, workload{"StatefulSet", o.Name, o.Spec.Template.Labels, o.Spec.Template.Spec})
			if o.Spec.ServiceName == "" {
				t.Errorf("StatefulSet %s: no serviceName", o.Name)
			}
			defer func(name, svc string) {
				if !services[svc] {
					t.Errorf("StatefulSet %s: serviceName %q is not a Service here", name, svc)
				}
			}(o.Name, o.Spec.ServiceName)
		case *autoscalingv2.HorizontalPodAutoscaler:
			hpas = append(hpas, o)
		case *policyv1.PodDisruptionBudget:
			selectors = append(selectors, struct {
				what string
				sel  map[string]string
			}{"PodDisruptionBudget " + o.Name, o.Spec.Selector.MatchLabels})
		}
		gvk := o.GetObjectKind().GroupVersionKind()
		byKind[gvk.Kind] = append(byKind[gvk.Kind], fmt.Sprint(o.(interface{ GetName() string }).GetName()))
	}
	// What production needs: three NATS and three Vault replicas, a
	// scalable proxy with an HPA, the policy and secrets services.
	for kind, want := range map[string][]string{
		"StatefulSet":             {"nats", "vault"},
		"Deployment":              {"keyway-policy", "keyway-proxy", "keyway-secrets"},
		"HorizontalPodAutoscaler": {"keyway-proxy"},
	} {
		got := slices.Sorted(slices.Values(byKind[kind]))
		if !slices.Equal(got, want) {
			t.Errorf("%s objects: %v, want %v", kind, got, want)
		}
	}
	for _, s := range selectors {
		// A selector must pick some workload's pods (labels the pods get
		// at run time, such as Vault's vault-active, aside).
		sel := map[string]string{"app.kubernetes.io/name": s.sel["app.kubernetes.io/name"]}
		found := false
		for _, w := range workloads {
			if labels.SelectorFromSet(sel).Matches(labels.Set(w.labels)) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s selects %v: no workload has those labels", s.what, s.sel)
		}
	}
	for _, w := range workloads {
		for _, v := range w.spec.Volumes {
			if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] {
				t.Errorf("%s %s: volume %s names ConfigMap %q, which is not here", w.kind, w.name, v.Name, v.ConfigMap.Name)
			}
		}
		if sa := w.spec.ServiceAccountName; sa != "" && !serviceAccounts[sa] {
			t.Errorf("%s %s: service account %q is not here", w.kind, w.name, sa)
		}
		for _, c := range w.spec.Containers {
			ports := map[string]bool{}
			for _, p := range c.Ports {
				ports[p.Name] = true
			}
			for _, probe := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
				if probe != nil && probe.HTTPGet != nil && probe.HTTPGet.Port.StrVal != "" && !ports[probe.HTTPGet.Port.StrVal] {
					t.Errorf("%s %s: a probe uses port %q, which the container does not name", w.kind, w.name, probe.HTTPGet.Port.StrVal)
				}
			}
		}
	}
	for _, h := range hpas {
		var target *workload
		for i := range workloads {
			if workloads[i].kind == h.Spec.ScaleTargetRef.Kind && workloads[i].name == h.Spec.ScaleTargetRef.Name {
				target = &workloads[i]
			}
		}
		if target == nil {
			t.Errorf("HPA %s scales %s %s, which is not here", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			continue
		}
		for _, c := range target.spec.Containers {
			if c.Resources.Requests.Cpu().IsZero() {
				t.Errorf("HPA %s scales on CPU but container %s of %s requests none", h.Name, c.Name, target.name)
			}
		}
	}
}

func TestCompose(t *testing.T) {
	abs, err := filepath.Abs("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("keyway", true) })
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range p.Services {
			if !yield(name) {
				return
			}
		}
	})
	if want := []string{"nats", "policy", "proxy", "secrets", "vault"}; !slices.Equal(names, want) {
		t.Errorf("compose services %v, want %v", names, want)
	}
	if d := p.Services["proxy"].Deploy; d == nil || d.Replicas == nil || *d.Replicas < 2 {
		t.Errorf("compose: the proxy should run several replicas")
	}
}

func TestVaultConfig(t *testing.T) {
	b, err := os.ReadFile("kubernetes/vault/vault.hcl")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Storage map[string]struct {
			Path      string           `hcl:"path"`
			RetryJoin []map[string]any `hcl:"retry_join"`
		} `hcl:"storage"`
		Listener map[string]map[string]any `hcl:"listener"`
	}
	if err := hcl.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("vault.hcl: %v", err)
	}
	raft, ok := cfg.Storage["raft"]
	if !ok || raft.Path == "" {
		t.Fatalf("vault.hcl: no raft storage with a path: %+v", cfg.Storage)
	}
	// HCL v1 decodes a block's attributes as a list of one-key maps.
	leaders := map[string]bool{}
	for _, j := range raft.RetryJoin {
		if a, ok := j["leader_api_addr"]; ok {
			leaders[fmt.Sprint(a)] = true
		}
	}
	if len(leaders) != 3 {
		t.Errorf("vault.hcl: retry_join names %d leaders (%v), want one per replica (3)", len(leaders), leaders)
	}
	tcp := cfg.Listener["tcp"]
	if tcp == nil || strings.TrimSpace(fmt.Sprint(tcp["tls_cert_file"])) == "" {
		t.Errorf("vault.hcl: the tcp listener should serve TLS: %+v", cfg.Listener)
	}
}

func checkSelector(t *testing.T, what string, sel, podLabels map[string]string) {
	t.Helper()
	if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(podLabels)) {
		t.Errorf("%s: selector %v does not match its pod template's labels %v", what, sel, podLabels)
	}
}
