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
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/hashicorp/hcl"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
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
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, policyv1.AddToScheme, rbacv1.AddToScheme, networkingv1.AddToScheme} {
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

// kustomizations are the folders `kubectl apply -k` takes: the base, and
// the base with Vault's Kubernetes auth (components/vault-kubernetes-auth).
var kustomizations = []string{"kubernetes", "kubernetes-vault-kubernetes-auth"}

func TestKubernetesManifests(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) { checkKubernetesManifests(t, dir) })
	}
}

func checkKubernetesManifests(t *testing.T, dir string) {
	objs := render(t, dir)
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

// workloadSpec is a workload's pod template, whatever its kind.
type workloadSpec struct {
	kind, name string
	labels     map[string]string
	spec       corev1.PodSpec
}

func workloadsOf(objs []runtime.Object) []workloadSpec {
	var ws []workloadSpec
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workloadSpec{"Deployment", o.Name, o.Spec.Template.Labels, o.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			ws = append(ws, workloadSpec{"StatefulSet", o.Name, o.Spec.Template.Labels, o.Spec.Template.Spec})
		}
	}
	return ws
}

// TestKubernetesSecureAsShipped checks what an attacker inside the cluster
// would try first: every workload runs unprivileged with a read-only root
// filesystem and its own service account; no API listens on the pod network
// without TLS and client authentication; the proxy's admin port is on no
// Service and its profiler is off; credentials come from Secrets, never
// from the manifests; and NetworkPolicies deny by default and cover every
// workload.
func TestKubernetesSecureAsShipped(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) { checkSecureAsShipped(t, dir) })
	}
}

func checkSecureAsShipped(t *testing.T, dir string) {
	objs := render(t, dir)
	workloads := workloadsOf(objs)
	serviceAccounts := map[string]*corev1.ServiceAccount{}
	var netpols []*networkingv1.NetworkPolicy
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			serviceAccounts[o.Name] = o
		case *networkingv1.NetworkPolicy:
			netpols = append(netpols, o)
		case *corev1.Service:
			for _, p := range o.Spec.Ports {
				if p.Name == "admin" || p.TargetPort.StrVal == "admin" || p.Port == 9080 {
					t.Errorf("Service %s exposes the proxy admin port (%s): it must stay off every Service", o.Name, p.Name)
				}
			}
		}
	}
	usedSA := map[string]string{}
	secretRe := regexp.MustCompile(`(?i)(password|token|secret|key)`)
	for _, w := range workloads {
		what := w.kind + " " + w.name
		sa := w.spec.ServiceAccountName
		switch {
		case sa == "" || sa == "default":
			t.Errorf("%s: runs as the namespace's default service account; give it its own", what)
		case serviceAccounts[sa] == nil:
			t.Errorf("%s: service account %q is not here", what, sa)
		case usedSA[sa] != "":
			t.Errorf("%s: shares service account %q with %s", what, sa, usedSA[sa])
		}
		usedSA[sa] = what
		if w.spec.AutomountServiceAccountToken == nil {
			t.Errorf("%s: automountServiceAccountToken is not set: say whether the pod needs the Kubernetes API", what)
		}
		psc := w.spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: the pod must run as a non-root user (runAsNonRoot and a non-zero runAsUser)", what)
		}
		if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: the pod must use the RuntimeDefault seccomp profile", what)
		}
		for _, c := range append(slices.Clone(w.spec.InitContainers), w.spec.Containers...) {
			cwhat := what + " container " + c.Name
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s: no securityContext", cwhat)
				continue
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation must be false", cwhat)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s: the root filesystem must be read-only", cwhat)
			case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s: capabilities must drop ALL and add none", cwhat)
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s: privileged", cwhat)
			}
			args := strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
			for _, banned := range []string{"--insecure-no-auth", "--pprof", "-dev"} {
				for _, a := range append(slices.Clone(c.Command), c.Args...) {
					if a == banned || strings.HasPrefix(a, banned+"=") {
						t.Errorf("%s: %s must not be on in a deployment", cwhat, banned)
					}
				}
			}
			if strings.HasPrefix(c.Image, "keyway/") {
				// Every Keyway API on the pod network is TLS with
				// client authentication and an access policy.
				for _, need := range []string{"--tls-cert=", "--tls-key=", "--client-ca=", "--access-policy=", "--nats-ca=", "--nats-user=", "--nats-password-file="} {
					if !strings.Contains(args, need) {
						t.Errorf("%s: no %s flag: its API or its NATS connection would be unauthenticated", cwhat, strings.TrimSuffix(need, "="))
					}
				}
				if strings.Contains(args, "nats://") {
					t.Errorf("%s: NATS over plain nats://; use tls://", cwhat)
				}
			}
			for _, e := range c.Env {
				// KEYWAY_ is every Keyway flag's prefix, not a key.
				if e.Value != "" && secretRe.MatchString(strings.TrimPrefix(e.Name, "KEYWAY_")) && !strings.HasSuffix(e.Name, "_FILE") && !strings.HasSuffix(e.Name, "CACERT") {
					t.Errorf("%s: env %s has a literal value: credentials come from Secrets (valueFrom.secretKeyRef or a mounted file)", cwhat, e.Name)
				}
			}
		}
	}

	// NetworkPolicies: a default deny, and every workload let in only by
	// a policy of its own.
	defaultDeny := false
	for _, np := range netpols {
		if len(np.Spec.PodSelector.MatchLabels) == 0 && len(np.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && len(np.Spec.Ingress) == 0 {
			defaultDeny = true
		}
	}
	if !defaultDeny {
		t.Error("no NetworkPolicy denies ingress to every pod by default")
	}
	for _, w := range workloads {
		covered := false
		for _, np := range netpols {
			if len(np.Spec.PodSelector.MatchLabels) == 0 {
				continue
			}
			if labels.SelectorFromSet(np.Spec.PodSelector.MatchLabels).Matches(labels.Set(w.labels)) && len(np.Spec.Ingress) > 0 {
				covered = true
				for _, rule := range np.Spec.Ingress {
					for _, p := range rule.Ports {
						if p.Port != nil && p.Port.IntValue() == 9080 && len(rule.From) == 0 {
							t.Errorf("NetworkPolicy %s lets anyone reach the admin port 9080", np.Name)
						}
					}
				}
			}
		}
		if !covered {
			t.Errorf("%s %s: no NetworkPolicy says who may reach it", w.kind, w.name)
		}
	}

	// Every Secret the manifests mount or read is named in deploy/README.md,
	// so an operator knows what to create.
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range workloads {
		var names []string
		for _, v := range w.spec.Volumes {
			if v.Secret != nil {
				names = append(names, v.Secret.SecretName)
			}
			if v.Projected != nil {
				for _, s := range v.Projected.Sources {
					if s.Secret != nil {
						names = append(names, s.Secret.Name)
					}
				}
			}
		}
		for _, c := range w.spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					names = append(names, e.ValueFrom.SecretKeyRef.Name)
				}
			}
		}
		for _, n := range names {
			if !strings.Contains(string(readme), "`"+n+"`") {
				t.Errorf("%s %s uses Secret %q, which deploy/README.md does not list", w.kind, w.name, n)
			}
		}
	}
}
