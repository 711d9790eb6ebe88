package localrun

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Pod is one replica of a workload, run as a local process with the
// container's command, arguments and environment from the manifest. Like
// the kubelet with restartPolicy Always, the launcher starts the process
// again when it exits, with backoff, unless Stop asked it to stay down.
// Its methods are safe for concurrent use.
type Pod struct {
	name, workload string
	labels         map[string]string
	container      corev1.Container
	spec           *corev1.PodSpec
	dir            string
	ports          map[int32]string // container port → 127.0.0.1:PORT
	named          map[string]int32 // port name → container port

	path string   // the image's binary
	args []string // rewritten
	env  []string // rewritten

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd exits
	down     bool          // Stop asked for it: not restarted
	closed   bool          // the cluster is closing
	exits    int           // exits not asked for (crashes and kills)
	lastExit error
}

// Name is the pod's name: a StatefulSet's NAME-ORDINAL, a Deployment's
// NAME-INDEX (a cluster's random suffix would tell nothing here).
func (p *Pod) Name() string { return p.name }

// Workload is the name of the Deployment or StatefulSet the pod belongs to.
func (p *Pod) Workload() string { return p.workload }

// Dir is the pod's folder: its volumes under volumes/, its log in log.
func (p *Pod) Dir() string { return p.dir }

// LogPath is the file the process's standard output and error go to, across
// restarts.
func (p *Pod) LogPath() string { return filepath.Join(p.dir, "log") }

// Addr is the loopback address of the container port named port (the
// manifest's ports[].name, such as "api" or "client"), or "" when the
// container has no such port.
func (p *Pod) Addr(port string) string {
	n, ok := p.named[port]
	if !ok {
		return ""
	}
	return p.ports[n]
}

// PID is the running process's id, 0 when none runs.
func (p *Pod) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Restarts counts the exits the launcher did not ask for: crashes and
// Kill.
func (p *Pod) Restarts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exits
}

// Kill sends SIGKILL to the process, as a node failure or the OOM killer
// would; the launcher starts it again after its backoff, as the kubelet
// does. An error means no process was running.
func (p *Pod) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("pod %s: no process is running", p.name)
	}
	return p.cmd.Process.Signal(syscall.SIGKILL)
}

// Stop sends SIGTERM, waits up to the pod's termination grace period (at
// most ctx), then SIGKILL; the pod stays down until Start.
func (p *Pod) Stop(ctx context.Context) error {
	p.mu.Lock()
	p.down = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("pod %s: did not stop on SIGTERM (%w); killed", p.name, ctx.Err())
	}
}

// Start starts a stopped pod again. Starting a running pod does nothing.
func (p *Pod) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
	if p.cmd != nil || p.closed {
		return nil
	}
	return p.spawn()
}

// spawn starts the process; p.mu is held.
func (p *Pod) spawn() error {
	logf, err := os.OpenFile(p.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.path, p.args...) //nolint:gosec // a workload's command and args from the rendered manifests, run from --bin
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// The process dies with the launcher, even when the launcher is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("pod %s: starting %s: %w", p.name, p.path, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.exited(cmd, err)
		close(done)
	}()
	return nil
}

// exited records an exit and, unless the pod was stopped, starts it again
// after a backoff that doubles from 250ms to 5s (the kubelet's goes to 5
// minutes; a local run wants its pods back sooner).
func (p *Pod) exited(cmd *exec.Cmd, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != cmd {
		return
	}
	p.cmd = nil
	if p.down || p.closed {
		return
	}
	p.exits++
	p.lastExit = err
	delay := min(250*time.Millisecond<<min(p.exits-1, 5), 5*time.Second)
	time.AfterFunc(delay, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.cmd == nil && !p.down && !p.closed {
			if err := p.spawn(); err != nil {
				p.lastExit = err
			}
		}
	})
}

// close stops the process for good: SIGTERM, then SIGKILL after grace.
func (p *Pod) close(grace time.Duration) {
	p.mu.Lock()
	p.closed = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// Ready runs the container's readiness probe once, as the kubelet does: an
// HTTP GET whose status is 200–399 (HTTPS without verifying the serving
// certificate, as the kubelet does), or a TCP connect. A container without
// a readiness probe is ready while its process runs.
func (p *Pod) Ready(ctx context.Context) bool {
	if p.PID() == 0 {
		return false
	}
	probe := p.container.ReadinessProbe
	if probe == nil {
		probe = p.container.StartupProbe
	}
	if probe == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	switch {
	case probe.HTTPGet != nil:
		addr := p.portAddr(probe.HTTPGet.Port.StrVal, probe.HTTPGet.Port.IntVal)
		scheme := strings.ToLower(string(probe.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+probe.HTTPGet.Path, nil)
		if err != nil {
			return false
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case probe.TCPSocket != nil:
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.portAddr(probe.TCPSocket.Port.StrVal, probe.TCPSocket.Port.IntVal))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return true
}

// The kubelet does not verify a probe's serving certificate.
var probeClient = &http.Client{Transport: &http.Transport{
	TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a readiness probe, as the kubelet's
	DisableKeepAlives: true,
}}

func (p *Pod) portAddr(name string, number int32) string {
	if name != "" {
		return p.Addr(name)
	}
	return p.ports[number]
}

// WaitReady waits until the readiness probe passes. It fails early, with
// the end of the log, when the process has exited three times: a pod that
// cannot start (a flag missing in the manifest) says so at once.
func (p *Pod) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	start := p.Restarts()
	for {
		if p.Ready(ctx) {
			return nil
		}
		p.mu.Lock()
		exits, last := p.exits, p.lastExit
		p.mu.Unlock()
		if exits-start >= 3 {
			return fmt.Errorf("pod %s exited %d times before it was ready (last: %w); the end of its log %s:\n%s", p.name, exits-start, last, p.LogPath(), p.LogTail(20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s: not ready (%w); the end of its log %s:\n%s", p.name, ctx.Err(), p.LogPath(), p.LogTail(20))
		case <-tick.C:
		}
	}
}

// LogTail is the last n lines of the pod's log.
func (p *Pod) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath())
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
