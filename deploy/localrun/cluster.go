package localrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Options say what to run and where.
type Options struct {
	// Manifests is the kustomize folder, deploy/kubernetes or an overlay of it.
	Manifests string
	// WorkDir holds each pod's folder and the operator's credentials; it
	// must exist and be empty or hold a previous run's folders (they are
	// replaced).
	WorkDir string
	// Bin is the folder of Keyway's binaries: an image keyway/NAME runs
	// Bin/NAME.
	Bin string
	// Images maps the other images' repositories (the image without tag or
	// digest, such as "nats" or "hashicorp/vault") to the binary that is
	// their entrypoint.
	Images map[string]string
	// Replicas overrides a workload's replica count, as `kubectl scale`
	// does; the manifest's count otherwise.
	Replicas map[string]int
	// Ready bounds the wait for every pod's readiness probe; 90s if zero.
	Ready time.Duration
	// Log, when set, gets a line per step.
	Log io.Writer
}

// Cluster is a running derivation of the manifests. Its methods are safe
// for concurrent use.
type Cluster struct {
	opts      Options
	namespace string
	pods      []*Pod
	services  map[string]*service
	secrets   map[string]map[string][]byte
	ca        *authorities
	vault     VaultInit
	operator  Operator
	started   time.Time
	closeOnce sync.Once
}

type service struct {
	obj     *corev1.Service
	proxies map[int32]*serviceProxy // Service port → its stand-in
}

type workload struct {
	kind, name  string
	replicas    int
	serviceName string // a StatefulSet's headless Service
	template    corev1.PodTemplateSpec
	claims      []string
}

// Pods are every pod, in the order they were started.
func (c *Cluster) Pods() []*Pod { return slices.Clone(c.pods) }

// PodsOf are the pods of one workload, by ordinal.
func (c *Cluster) PodsOf(workload string) []*Pod {
	var out []*Pod
	for _, p := range c.pods {
		if p.workload == workload {
			out = append(out, p)
		}
	}
	return out
}

// Pod is the pod named name, or nil.
func (c *Cluster) Pod(name string) *Pod {
	for _, p := range c.pods {
		if p.name == name {
			return p
		}
	}
	return nil
}

// ServiceAddr is the loopback address that stands for a Service's port (the
// Service's port number, not its target), or "".
func (c *Cluster) ServiceAddr(name string, port int32) string {
	s, ok := c.services[name]
	if !ok {
		return ""
	}
	if sp, ok := s.proxies[port]; ok {
		return sp.addr()
	}
	return ""
}

// Vault is what initialising Vault gave: its unseal key and root token.
func (c *Cluster) Vault() VaultInit { return c.vault }

// Operator is an operator's credentials and keywayctl configuration.
func (c *Cluster) Operator() Operator { return c.operator }

// Close stops every pod (SIGTERM, then SIGKILL after 10s) and the Service
// stand-ins. The pods' folders stay, for their logs.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var wg sync.WaitGroup
		for _, p := range slices.Backward(c.pods) {
			wg.Go(func() { p.close(10 * time.Second) })
		}
		wg.Wait()
		for _, s := range c.services {
			for _, sp := range s.proxies {
				sp.close()
			}
		}
	})
	return nil
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Log != nil {
		fmt.Fprintf(c.opts.Log, "[+%5.1fs] "+format+"\n", append([]any{time.Since(c.started).Seconds()}, args...)...)
	}
}

// Start renders the manifests and runs them: the StatefulSets first (NATS,
// Vault), then Vault is initialised, unsealed and set up once as
// deploy/README.md says, then the Deployments. It returns when every pod's
// readiness probe passes; on an error every process it started is stopped.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Ready == 0 {
		opts.Ready = 90 * time.Second
	}
	started := time.Now()
	objs, err := Render(opts.Manifests)
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, services: map[string]*service{}, started: started}
	if err := c.start(ctx, objs); err != nil {
		_ = c.Close() // the start's error is the one to report
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context, objs []runtime.Object) error {
	configMaps := map[string]map[string]string{}
	var workloads []workload
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Namespace:
			c.namespace = o.Name
		case *corev1.ConfigMap:
			configMaps[o.Name] = o.Data
		case *corev1.Service:
			c.services[o.Name] = &service{obj: o, proxies: map[int32]*serviceProxy{}}
		case *appsv1.StatefulSet:
			w := workload{kind: "StatefulSet", name: o.Name, replicas: int(ptrOr(o.Spec.Replicas, 1)), serviceName: o.Spec.ServiceName, template: o.Spec.Template}
			for _, claim := range o.Spec.VolumeClaimTemplates {
				w.claims = append(w.claims, claim.Name)
			}
			workloads = append(workloads, w)
		case *appsv1.Deployment:
			workloads = append(workloads, workload{kind: "Deployment", name: o.Name, replicas: int(ptrOr(o.Spec.Replicas, 1)), template: o.Spec.Template})
		}
	}
	var err error
	if c.ca, err = newAuthorities(); err != nil {
		return err
	}
	if c.secrets, err = makeSecrets(c.ca); err != nil {
		return err
	}
	if c.operator, err = c.writeOperator(); err != nil {
		return err
	}
	// Pods and their loopback ports first: every rewrite needs all addresses.
	for _, w := range workloads {
		if n, ok := c.opts.Replicas[w.name]; ok {
			w.replicas = n
		}
		if len(w.template.Spec.Containers) != 1 || len(w.template.Spec.InitContainers) != 0 {
			return fmt.Errorf("%s %s: %d containers and %d init containers; the launcher runs pods of one container", w.kind, w.name, len(w.template.Spec.Containers), len(w.template.Spec.InitContainers))
		}
		for i := range w.replicas {
			p, err := c.newPod(w, i)
			if err != nil {
				return err
			}
			c.pods = append(c.pods, p)
		}
	}
	if err := c.startServices(); err != nil {
		return err
	}
	if err := c.writeKeywayctlConfig(c.ServiceAddr("keyway-policy", 8081), c.ServiceAddr("keyway-secrets", 8082)); err != nil {
		return err
	}
	byName := map[string]workload{}
	for _, w := range workloads {
		byName[w.name] = w
	}
	for _, p := range c.pods {
		if err := c.prepare(p, byName[p.workload], configMaps); err != nil {
			return err
		}
	}
	// StatefulSets (the stores) first, then Vault's one-time set-up, whose
	// AppRole credentials the secrets service's Secret holds, then the rest.
	readyCtx, cancel := context.WithTimeout(ctx, c.opts.Ready)
	defer cancel()
	stores, rest := c.split(byName)
	if err := c.startAll(readyCtx, stores, c.vaultPods()); err != nil {
		return err
	}
	if vp := c.vaultPods(); len(vp) > 0 {
		if err := c.setUpVault(readyCtx, vp); err != nil {
			return err
		}
		if err := c.waitReady(readyCtx, vp); err != nil {
			return err
		}
	}
	for _, p := range rest {
		if err := c.writeVolumes(p, byName[p.workload], configMaps); err != nil {
			return err
		}
	}
	// One Deployment at a time, in the manifests' order, each once the one
	// before is ready, as `kubectl rollout status` between applies would:
	// a proxy node started before the policy service has created the
	// configuration bucket backs off for up to ~40s.
	for _, w := range workloads {
		var pods []*Pod
		for _, p := range rest {
			if p.workload == w.name {
				pods = append(pods, p)
			}
		}
		if err := c.startAll(readyCtx, pods, nil); err != nil {
			return err
		}
	}
	return nil
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// split returns the StatefulSets' pods and the others'.
func (c *Cluster) split(byName map[string]workload) (stores, rest []*Pod) {
	for _, p := range c.pods {
		if byName[p.workload].kind == "StatefulSet" {
			stores = append(stores, p)
		} else {
			rest = append(rest, p)
		}
	}
	return stores, rest
}

// vaultPods are the pods that run Vault's image.
func (c *Cluster) vaultPods() []*Pod {
	var out []*Pod
	for _, p := range c.pods {
		if repository(p.container.Image) == "hashicorp/vault" {
			out = append(out, p)
		}
	}
	return out
}

// startAll starts pods and waits for those not in skipWait to be ready.
func (c *Cluster) startAll(ctx context.Context, pods, skipWait []*Pod) error {
	for _, p := range pods {
		c.logf("starting %s: %s %s", p.name, p.path, strings.Join(p.args, " "))
		if err := p.Start(); err != nil {
			return err
		}
	}
	var wait []*Pod
	for _, p := range pods {
		if !slices.Contains(skipWait, p) {
			wait = append(wait, p)
		}
	}
	return c.waitReady(ctx, wait)
}

func (c *Cluster) waitReady(ctx context.Context, pods []*Pod) error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() { errs[i] = p.WaitReady(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, p := range pods {
		c.logf("ready: %s", p.name)
	}
	return nil
}

// repository is an image without its tag or digest.
func repository(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image
}

func (c *Cluster) binary(image string) (string, error) {
	repo := repository(image)
	if b, ok := c.opts.Images[repo]; ok {
		return b, nil
	}
	if name, ok := strings.CutPrefix(repo, "keyway/"); ok && c.opts.Bin != "" {
		b := filepath.Join(c.opts.Bin, name)
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("image %s: %w; run `make build`", image, err)
		}
		return b, nil
	}
	return "", fmt.Errorf("image %s: no binary for it; give one in Options.Images[%q]", image, repo)
}

func (c *Cluster) newPod(w workload, i int) (*Pod, error) {
	ctr := w.template.Spec.Containers[0]
	p := &Pod{
		name:      fmt.Sprintf("%s-%d", w.name, i),
		workload:  w.name,
		labels:    w.template.Labels,
		container: ctr,
		spec:      &w.template.Spec,
		ports:     map[int32]string{},
		named:     map[string]int32{},
		down:      true,
	}
	p.dir = filepath.Join(c.opts.WorkDir, p.name)
	if err := os.RemoveAll(p.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, err
	}
	for _, port := range ctr.Ports {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		p.ports[port.ContainerPort] = addr
		if port.Name != "" {
			p.named[port.Name] = port.ContainerPort
		}
	}
	var err error
	p.path, err = c.binary(ctr.Image)
	return p, err
}

// handedOut are the ports freePort gave in this process: the kernel may
// offer a port again once its probe listener is closed.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

// freePort picks a free loopback port, never one it gave before, below
// the kernel's range of ephemeral ports when there is room there: a port
// in that range, free when probed, can become the source port of any
// outgoing connection on the machine before the pod binds it (the
// listeners of a NATS cluster and of Vault then fail to start), while a
// port below it is only ever taken by a process that binds it on purpose.
// Another process could still do that; the pod would then fail to start
// and say so.
func freePort() (string, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	if lo, ok := ephemeralLow(); ok {
		for range 100 {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(staticPortMin+rand.IntN(lo-staticPortMin)))
			if handedOut.ports[addr] {
				continue
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				continue
			}
			ln.Close()
			handedOut.ports[addr] = true
			return addr, nil
		}
	}
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		ln.Close()
		if !handedOut.ports[addr] {
			handedOut.ports[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("no free loopback port in 100 tries")
}

// staticPortMin is the lowest port freePort picks below the ephemeral
// range: above the well-known and most registered services' ports.
const staticPortMin = 20000

// ephemeralLow is the first port of the kernel's ephemeral range (Linux:
// net.ipv4.ip_local_port_range), when it leaves room for freePort below
// it.
func ephemeralLow() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return 0, false
	}
	lo, err := strconv.Atoi(fields[0])
	if err != nil || lo < staticPortMin+1000 {
		return 0, false
	}
	return lo, true
}

// startServices opens a stand-in address for every Service port.
func (c *Cluster) startServices() error {
	for _, s := range c.services {
		for _, sp := range s.obj.Spec.Ports {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			proxy := &serviceProxy{name: s.obj.Name, ln: ln, endpoints: c.endpointsFunc(s.obj, sp)}
			for k := range s.obj.Spec.Selector {
				if k == "vault-active" {
					proxy.endpointOK = vaultActive
				}
			}
			s.proxies[sp.Port] = proxy
			proxy.serve()
		}
	}
	return nil
}

// selected tells whether a Service's selector picks p. Labels a controller
// sets at run time (vault-active) are left to the stand-in's endpointOK.
func selected(selector map[string]string, p *Pod) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if k == "vault-active" {
			continue
		}
		if p.labels[k] != v {
			return false
		}
	}
	return true
}

func (c *Cluster) endpointsFunc(svc *corev1.Service, sp corev1.ServicePort) func() []string {
	return func() []string {
		var out []string
		for _, p := range c.pods {
			if !selected(svc.Spec.Selector, p) {
				continue
			}
			if addr := c.target(p, sp); addr != "" {
				out = append(out, addr)
			}
		}
		return out
	}
}

// target is the pod's address for a Service port's targetPort.
func (c *Cluster) target(p *Pod, sp corev1.ServicePort) string {
	if sp.TargetPort.StrVal != "" {
		return p.Addr(sp.TargetPort.StrVal)
	}
	if sp.TargetPort.IntVal != 0 {
		return p.ports[sp.TargetPort.IntVal]
	}
	return p.ports[sp.Port]
}

// names are the DNS forms of a name in the namespace.
func (c *Cluster) names(name string) []string {
	out := []string{name}
	if c.namespace != "" {
		out = append(out, name+"."+c.namespace, name+"."+c.namespace+".svc", name+"."+c.namespace+".svc.cluster.local")
	}
	return out
}

// rewriterFor builds p's rewriter: every Service name and port, every
// StatefulSet pod's name under its headless Service, p's wildcard binds and
// p's mounts.
func (c *Cluster) rewriterFor(p *Pod, mounts map[string]string) *rewriter {
	r := newRewriter()
	for _, s := range c.services {
		for _, sp := range s.obj.Spec.Ports {
			for _, n := range c.names(s.obj.Name) {
				r.hostPort(n, sp.Port, s.proxies[sp.Port].addr())
			}
			for _, q := range c.pods {
				if !selected(s.obj.Spec.Selector, q) {
					continue
				}
				if addr := c.target(q, sp); addr != "" {
					for _, n := range c.names(s.obj.Name) {
						r.hostPort(q.name+"."+n, sp.Port, addr)
					}
				}
			}
		}
	}
	for port, addr := range p.ports {
		r.hostPort("0.0.0.0", port, addr)
	}
	for mp, folder := range mounts {
		r.mount(mp, folder)
	}
	return r
}

// prepare computes p's arguments and environment.
func (c *Cluster) prepare(p *Pod, w workload, configMaps map[string]map[string]string) error {
	mounts := map[string]string{}
	for _, m := range p.container.VolumeMounts {
		if m.SubPath != "" {
			return fmt.Errorf("pod %s: volumeMount %s: subPath is not supported by the launcher", p.name, m.Name)
		}
		mounts[m.MountPath] = filepath.Join(p.dir, "volumes", m.Name)
	}
	r := c.rewriterFor(p, mounts)
	defined := map[string]string{}
	for _, e := range p.container.Env {
		v, err := c.envValue(p, e, configMaps)
		if err != nil {
			return err
		}
		v = r.apply(expandEnv(v, defined))
		defined[e.Name] = v
		p.env = append(p.env, e.Name+"="+v)
	}
	if tmp, ok := mounts["/tmp"]; ok {
		p.env = append(p.env, "TMPDIR="+tmp)
	}
	var args []string
	if len(p.container.Command) > 1 {
		args = append(args, p.container.Command[1:]...)
	}
	args = append(args, p.container.Args...)
	for _, a := range args {
		p.args = append(p.args, r.apply(expandEnv(a, defined)))
	}
	if len(p.container.Command) > 0 && path.Base(p.container.Command[0]) != filepath.Base(p.path) {
		return fmt.Errorf("pod %s: command %q is not the image's binary %s", p.name, p.container.Command[0], p.path)
	}
	// Volumes are written now when every Secret they need exists; the
	// secrets service's AppRole Secret exists once Vault is set up.
	if c.needs(p, appRoleSecret) {
		return nil
	}
	return c.writeVolumes(p, w, configMaps)
}

func (c *Cluster) needs(p *Pod, secret string) bool {
	for _, v := range p.spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == secret {
			return true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil && s.Secret.Name == secret {
					return true
				}
			}
		}
	}
	return false
}

func (c *Cluster) envValue(p *Pod, e corev1.EnvVar, configMaps map[string]map[string]string) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	switch from := e.ValueFrom; {
	case from.FieldRef != nil:
		switch from.FieldRef.FieldPath {
		case "metadata.name":
			return p.name, nil
		case "metadata.namespace":
			return c.namespace, nil
		}
		return "", fmt.Errorf("pod %s: env %s: fieldRef %s is not one the launcher knows (metadata.name, metadata.namespace)", p.name, e.Name, from.FieldRef.FieldPath)
	case from.ResourceFieldRef != nil:
		return resourceValue(p, e.Name, from.ResourceFieldRef)
	case from.SecretKeyRef != nil:
		v, ok := c.secrets[from.SecretKeyRef.Name][from.SecretKeyRef.Key]
		if !ok {
			return "", fmt.Errorf("pod %s: env %s: Secret %s has no key %q (the Secrets are deploy/README.md's table)", p.name, e.Name, from.SecretKeyRef.Name, from.SecretKeyRef.Key)
		}
		return string(v), nil
	case from.ConfigMapKeyRef != nil:
		v, ok := configMaps[from.ConfigMapKeyRef.Name][from.ConfigMapKeyRef.Key]
		if !ok {
			return "", fmt.Errorf("pod %s: env %s: ConfigMap %s has no key %q", p.name, e.Name, from.ConfigMapKeyRef.Name, from.ConfigMapKeyRef.Key)
		}
		return v, nil
	}
	return "", fmt.Errorf("pod %s: env %s: a valueFrom the launcher does not know", p.name, e.Name)
}

// writeVolumes fills p's volume folders: Secrets and ConfigMaps as files
// (ConfigMap files rewritten like the arguments), emptyDir and volume claims
// as empty folders.
func (c *Cluster) writeVolumes(p *Pod, w workload, configMaps map[string]map[string]string) error {
	mounts := map[string]string{}
	for _, m := range p.container.VolumeMounts {
		mounts[m.MountPath] = filepath.Join(p.dir, "volumes", m.Name)
	}
	r := c.rewriterFor(p, mounts)
	volumes := map[string]corev1.Volume{}
	for _, v := range p.spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range p.container.VolumeMounts {
		dir := filepath.Join(p.dir, "volumes", m.Name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		v, ok := volumes[m.Name]
		if !ok {
			if slices.Contains(w.claims, m.Name) {
				continue // a volume claim: the folder, kept across restarts
			}
			return fmt.Errorf("pod %s: volumeMount %s names no volume", p.name, m.Name)
		}
		files, err := c.volumeFiles(p, v, configMaps, r)
		if err != nil {
			return err
		}
		for name, data := range files {
			f := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(f, data, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Cluster) volumeFiles(p *Pod, v corev1.Volume, configMaps map[string]map[string]string, r *rewriter) (map[string][]byte, error) {
	out := map[string][]byte{}
	secret := func(name string, items []corev1.KeyToPath) error {
		data, ok := c.secrets[name]
		if !ok {
			return fmt.Errorf("pod %s: volume %s: Secret %s is not one deploy/README.md's table lists; the launcher makes those alone", p.name, v.Name, name)
		}
		return pick(out, data, items, func(b []byte) []byte { return b }, "Secret "+name)
	}
	configMap := func(name string, items []corev1.KeyToPath) error {
		data, ok := configMaps[name]
		if !ok {
			return fmt.Errorf("pod %s: volume %s: ConfigMap %s is not in the manifests", p.name, v.Name, name)
		}
		bytesData := map[string][]byte{}
		for k, s := range data {
			bytesData[k] = []byte(s)
		}
		return pick(out, bytesData, items, func(b []byte) []byte { return []byte(c.clusterOnly(r.apply(string(b)))) }, "ConfigMap "+name)
	}
	switch {
	case v.Secret != nil:
		return out, secret(v.Secret.SecretName, v.Secret.Items)
	case v.ConfigMap != nil:
		return out, configMap(v.ConfigMap.Name, v.ConfigMap.Items)
	case v.EmptyDir != nil:
		return out, nil
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			var err error
			switch {
			case s.Secret != nil:
				err = secret(s.Secret.Name, s.Secret.Items)
			case s.ConfigMap != nil:
				err = configMap(s.ConfigMap.Name, s.ConfigMap.Items)
			case s.ServiceAccountToken != nil:
				err = fmt.Errorf("pod %s: volume %s: a service-account token needs a Kubernetes API, which a local run has not (the base manifests use AppRole; components/vault-kubernetes-auth switches to Kubernetes auth)", p.name, v.Name)
			default:
				err = fmt.Errorf("pod %s: volume %s: a projected source the launcher does not know", p.name, v.Name)
			}
			if err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("pod %s: volume %s: a volume type the launcher does not know (it knows secret, configMap, projected, emptyDir and volume claims)", p.name, v.Name)
}

func pick(out, data map[string][]byte, items []corev1.KeyToPath, conv func([]byte) []byte, what string) error {
	if len(items) == 0 {
		for k, b := range data {
			out[k] = conv(b)
		}
		return nil
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		out[it.Path] = conv(b)
	}
	return nil
}

// clusterOnly removes what only a Kubernetes cluster can serve from a
// configuration file: Vault's Kubernetes service registration, which
// labels the active pod through the Kubernetes API (the Service stand-in
// finds the active node itself).
func (c *Cluster) clusterOnly(s string) string {
	const stanza = `service_registration "kubernetes" {}`
	return strings.ReplaceAll(s, stanza, "# "+stanza+" (needs the Kubernetes API; removed by the launcher)")
}

// resourceValue is what the downward API's resourceFieldRef gives: the
// container's memory limit or request divided by the divisor (1 when
// none), rounded up, as the kubelet does. The manifests read
// limits.memory for the proxy node's --memory-limit.
func resourceValue(p *Pod, env string, ref *corev1.ResourceFieldSelector) (string, error) {
	var list corev1.ResourceList
	var name corev1.ResourceName
	switch ref.Resource {
	case "limits.memory":
		list, name = p.container.Resources.Limits, corev1.ResourceMemory
	case "requests.memory":
		list, name = p.container.Resources.Requests, corev1.ResourceMemory
	default:
		return "", fmt.Errorf("pod %s: env %s: resourceFieldRef %s is not one the launcher knows (limits.memory, requests.memory)", p.name, env, ref.Resource)
	}
	q, ok := list[name]
	if !ok {
		return "", fmt.Errorf("pod %s: env %s: resourceFieldRef %s: the container sets none", p.name, env, ref.Resource)
	}
	div := int64(1)
	if !ref.Divisor.IsZero() {
		div = ref.Divisor.Value()
	}
	return strconv.FormatInt((q.Value()+div-1)/div, 10), nil
}
