package localrun

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ComposeOptions say which compose file to run and where; the fields are
// Options' namesakes.
type ComposeOptions struct {
	File    string
	WorkDir string
	Bin     string
	Images  map[string]string
	Ready   time.Duration
	Log     io.Writer
}

// composeSecrets are what compose.yaml's secrets hold, by their name there:
// the files of ./secrets/ that deploy/README.md's Secret table describes.
func composeSecrets(a *authorities, ips map[string][]net.IP, passwords map[string][]byte) (map[string][]byte, error) {
	out := map[string][]byte{
		"client-cas":            append(append([]byte{}, a.operator.pem...), a.internal.pem...),
		"internal-ca":           a.internal.pem,
		"nats-ca":               a.nats.pem,
		"nats-policy-password":  passwords["policy"],
		"nats-secrets-password": passwords["secrets"],
		"nats-node-password":    passwords["node"],
	}
	for _, s := range []struct {
		prefix, service string
		ca              *ca
		server          bool
		uri             string
	}{
		{"policy-api", "policy", a.internal, true, ""},
		{"secrets-api", "secrets", a.internal, true, ""},
		{"secrets-internal", "secrets", a.internal, true, ""},
		{"proxy-admin", "proxy", a.internal, true, ""},
		{"nats-tls", "nats", a.nats, true, ""},
		{"policy-internal", "policy", a.internal, false, spiffeTrustDomain + "/policy"},
		{"proxy-internal", "proxy", a.internal, false, spiffeTrustDomain + "/node/keyway-proxy"},
	} {
		l := leaf{cn: s.service, server: s.server, client: !s.server}
		if s.server {
			l.dns, l.ips = []string{s.service}, ips[s.service]
		} else {
			l.uris = []string{s.uri}
		}
		kp, err := s.ca.issue(l)
		if err != nil {
			return nil, err
		}
		out[s.prefix+"-crt"], out[s.prefix+"-key"] = kp.cert, kp.key
	}
	return out, nil
}

// StartCompose runs compose.yaml's services as local processes, the way
// Start runs the Kubernetes manifests. A compose container has a network
// namespace of its own and its commands name fixed ports, so each replica
// gets a loopback address of its own instead of ports of its own
// (127.R.R.N, R random per run): 0.0.0.0 and 127.0.0.1 in its command,
// environment and mounted files become that address, and a service's name
// before a port becomes its first replica's. Secrets are the files of
// compose's secrets, made by the launcher's CAs; a bind-mounted file is
// copied with the same rewriting; a named volume is a folder. Services start
// in depends_on order; one is ready when its healthcheck's URL answers
// (wget -qO- URL is an HTTP GET), else when the addresses its command
// listens on accept connections. Vault runs as compose says, in dev mode.
func StartCompose(ctx context.Context, opts ComposeOptions) (*Cluster, error) {
	if opts.Ready == 0 {
		opts.Ready = 90 * time.Second
	}
	c := &Cluster{opts: Options{WorkDir: opts.WorkDir, Bin: opts.Bin, Images: opts.Images, Ready: opts.Ready, Log: opts.Log}, services: map[string]*service{}, started: time.Now()}
	if err := c.startCompose(ctx, opts.File); err != nil {
		_ = c.Close() // the start's error is the one to report
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startCompose(ctx context.Context, file string) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	passwords := map[string][]byte{}
	env := types.Mapping{}
	for _, u := range []string{"policy", "secrets", "node"} {
		passwords[u] = []byte(password())
		env["NATS_"+strings.ToUpper(u)+"_PASSWORD"] = string(passwords[u])
	}
	project, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: env,
	}, func(o *loader.Options) { o.SetProjectName("keyway", true) })
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	// Each replica's loopback address.
	r1, _ := rand.Int(rand.Reader, big.NewInt(254))
	r2, _ := rand.Int(rand.Reader, big.NewInt(256))
	next := 1
	ips := map[string][]net.IP{}
	order, err := composeOrder(project)
	if err != nil {
		return err
	}
	for _, name := range order {
		n := 1
		if d := project.Services[name].Deploy; d != nil && d.Replicas != nil {
			n = *d.Replicas
		}
		for range n {
			ips[name] = append(ips[name], net.IPv4(127, byte(r1.Int64()+1), byte(r2.Int64()), byte(next)))
			next++
		}
	}
	if c.ca, err = newAuthorities(); err != nil {
		return err
	}
	files, err := composeSecrets(c.ca, ips, passwords)
	if err != nil {
		return err
	}
	if c.operator, err = c.writeOperator(); err != nil {
		return err
	}
	if err := c.writeKeywayctlConfig(ips["policy"][0].String()+":8081", ips["secrets"][0].String()+":8082"); err != nil {
		return err
	}
	readyCtx, cancel := context.WithTimeout(ctx, c.opts.Ready)
	defer cancel()
	for _, name := range order {
		svc := project.Services[name]
		var pods []*Pod
		for i, ip := range ips[name] {
			p, err := c.composePod(svc, i, ip, ips, files)
			if err != nil {
				return err
			}
			c.pods = append(c.pods, p)
			pods = append(pods, p)
		}
		if err := c.startAll(readyCtx, pods, nil); err != nil {
			return err
		}
	}
	return nil
}

// composeOrder is the services in depends_on order.
func composeOrder(p *types.Project) ([]string, error) {
	var order []string
	done := map[string]bool{}
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		if done[name] {
			return nil
		}
		if slices.Contains(path, name) {
			return fmt.Errorf("compose: depends_on cycle %v", append(path, name))
		}
		for _, dep := range slices.Sorted(func(yield func(string) bool) {
			for d := range p.Services[name].DependsOn {
				if !yield(d) {
					return
				}
			}
		}) {
			if err := visit(dep, append(path, name)); err != nil {
				return err
			}
		}
		done[name] = true
		order = append(order, name)
		return nil
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range p.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		if err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func (c *Cluster) composePod(svc types.ServiceConfig, i int, ip net.IP, ips map[string][]net.IP, files map[string][]byte) (*Pod, error) {
	p := &Pod{
		name:      fmt.Sprintf("%s-%d", svc.Name, i+1),
		workload:  svc.Name,
		container: corev1.Container{Image: svc.Image},
		spec:      &corev1.PodSpec{},
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
	var err error
	if p.path, err = c.binary(svc.Image); err != nil {
		return nil, err
	}
	r := newRewriter()
	for name, addrs := range ips {
		r.name(name, addrs[0].String())
	}
	r.addr("0.0.0.0", ip.String())
	r.addr("127.0.0.1", ip.String())
	for _, s := range svc.Secrets {
		data, ok := files[s.Source]
		if !ok {
			return nil, fmt.Errorf("compose service %s: secret %s is not one the launcher makes (deploy/README.md's table)", svc.Name, s.Source)
		}
		target := s.Target
		if target == "" {
			target = s.Source
		}
		if !path.IsAbs(target) {
			target = "/run/secrets/" + target
		}
		local := filepath.Join(p.dir, "secrets", s.Source)
		if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(local, data, 0o600); err != nil {
			return nil, err
		}
		r.mount(target, local)
	}
	var binds [][2]string // source, local copy
	for _, v := range svc.Volumes {
		switch v.Type {
		case types.VolumeTypeBind:
			local := filepath.Join(p.dir, "binds", filepath.Base(v.Target))
			binds = append(binds, [2]string{v.Source, local})
			r.mount(v.Target, local)
		case types.VolumeTypeVolume:
			local := filepath.Join(p.dir, "volumes", v.Source)
			if err := os.MkdirAll(local, 0o700); err != nil {
				return nil, err
			}
			r.mount(v.Target, local)
		default:
			return nil, fmt.Errorf("compose service %s: volume type %s is not one the launcher knows (bind, volume)", svc.Name, v.Type)
		}
	}
	for _, b := range binds {
		data, err := os.ReadFile(b[0])
		if err != nil {
			return nil, fmt.Errorf("compose service %s: %w", svc.Name, err)
		}
		if err := os.MkdirAll(filepath.Dir(b[1]), 0o700); err != nil {
			return nil, err
		}
		//nolint:gosec // b[1] is a bind mount's source in the launcher's own work folder
		if err := os.WriteFile(b[1], []byte(r.apply(string(data))), 0o600); err != nil {
			return nil, err
		}
	}
	for _, a := range svc.Command {
		p.args = append(p.args, r.apply(a))
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range svc.Environment {
			if !yield(k) {
				return
			}
		}
	}) {
		if v := svc.Environment[k]; v != nil {
			p.env = append(p.env, k+"="+r.apply(*v))
		}
	}
	// A container has a home folder; Vault's dev mode writes its token there.
	p.env = append(p.env, "HOME="+p.dir)
	// Readiness: the healthcheck's URL, else the addresses it listens on.
	if hc := svc.HealthCheck; hc != nil && len(hc.Test) > 0 && slices.Contains(hc.Test, "wget") {
		u := r.apply(hc.Test[len(hc.Test)-1])
		rest, ok := strings.CutPrefix(u, "http://")
		host, pathQuery, _ := strings.Cut(rest, "/")
		if !ok {
			return nil, fmt.Errorf("compose service %s: healthcheck URL %q is not http://", svc.Name, u)
		}
		p.ports[1] = host
		p.container.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/" + pathQuery, Port: intstr.FromInt32(1)}}}
	} else {
		for _, a := range p.args {
			if _, addr, ok := strings.Cut(a, ip.String()+":"); ok && strings.HasPrefix(a, "-") {
				p.ports[1] = ip.String() + ":" + strings.TrimRight(addr, "/")
				p.container.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(1)}}}
				break
			}
		}
	}
	return p, nil
}
