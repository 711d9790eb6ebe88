package localrun

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// serviceProxy stands in for kube-proxy: one loopback address per Service
// port, which forwards each connection to one of the Service's endpoints in
// turn, skipping those that refuse it (a pod that is down). A Service whose
// selector names a label that only a controller sets at run time (Vault's
// vault-active, set by its Kubernetes service registration on the active
// node) gets the endpoints that controller would label: endpointOK says
// which.
type serviceProxy struct {
	name       string
	ln         net.Listener
	endpoints  func() []string
	endpointOK func(ctx context.Context, addr string) bool
	next       atomic.Uint64
	wg         sync.WaitGroup
}

func (s *serviceProxy) addr() string { return s.ln.Addr().String() }

func (s *serviceProxy) serve() {
	s.wg.Go(func() {
		for {
			conn, err := s.ln.Accept()
			if err != nil {
				return
			}
			go s.forward(conn)
		}
	})
}

func (s *serviceProxy) forward(conn net.Conn) {
	defer conn.Close()
	eps := s.endpoints()
	if len(eps) == 0 {
		return
	}
	first := int(s.next.Add(1))
	for i := range eps {
		addr := eps[(first+i)%len(eps)]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if s.endpointOK != nil && !s.endpointOK(ctx, addr) {
			cancel()
			continue
		}
		up, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		cancel()
		if err != nil {
			continue
		}
		defer up.Close()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(up, conn); closeWrite(up); done <- struct{}{} }()
		go func() { _, _ = io.Copy(conn, up); closeWrite(conn); done <- struct{}{} }()
		<-done
		<-done
		return
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (s *serviceProxy) close() {
	s.ln.Close()
	s.wg.Wait()
}

// vaultActive tells whether the Vault node at addr is the active one
// (/v1/sys/health answers 200; a standby answers 429, a sealed node 503),
// which is the pod Vault's service registration labels vault-active=true.
func vaultActive(ctx context.Context, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1/sys/health", nil)
	if err != nil {
		return false
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
