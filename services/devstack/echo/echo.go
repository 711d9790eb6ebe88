// Package echo is a demo upstream for the local stack, tests and benchmarks:
// an HTTPS server that can demand client certificates and answers each
// request with what it saw of the TLS connection, so a caller can check which
// client certificate the gateway presented.
package echo

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Reply is the JSON body the server answers with.
type Reply struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Host   string `json:"host"`
	Proto  string `json:"proto"`
	// TLS facts; empty on plain HTTP.
	TLSVersion string `json:"tlsVersion,omitempty"`
	Cipher     string `json:"cipher,omitempty"`
	ALPN       string `json:"alpn,omitempty"`
	SNI        string `json:"sni,omitempty"`
	// The client certificate presented by the caller (the gateway).
	ClientSubject     string `json:"clientSubject,omitempty"`
	ClientFingerprint string `json:"clientFingerprint,omitempty"`
	// Headers the caller sent that a gateway sets.
	RequestID     string `json:"requestId,omitempty"`
	ForwardedFor  string `json:"forwardedFor,omitempty"`
	ForwardedHost string `json:"forwardedHost,omitempty"`
	// ForwardedClientCert is the X-Forwarded-Client-Cert the gateway set
	// from the client's verified certificate.
	ForwardedClientCert string `json:"forwardedClientCert,omitempty"`
}

// Server is a running echo upstream.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	hits atomic.Int64
}

// Start serves on addr ("127.0.0.1:0" for any port). With a non-nil tlsConfig
// it serves HTTPS (HTTP/1.1 and h2 by ALPN); otherwise plain HTTP/1.1 and h2c.
func Start(addr string, tlsConfig *tls.Config) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		if len(cfg.NextProtos) == 0 {
			cfg.NextProtos = []string{"h2", "http/1.1"}
		}
		s.srv.TLSConfig = cfg
		ln = tls.NewListener(ln, cfg)
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic("echo: " + err.Error())
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the port the server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Hits counts requests served.
func (s *Server) Hits() int64 { return s.hits.Load() }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	rep := Reply{
		Method: r.Method, Path: r.URL.Path, Host: r.Host, Proto: r.Proto,
		RequestID:     r.Header.Get("X-Request-Id"),
		ForwardedFor:  r.Header.Get("X-Forwarded-For"),
		ForwardedHost: r.Header.Get("X-Forwarded-Host"),

		ForwardedClientCert: r.Header.Get("X-Forwarded-Client-Cert"),
	}
	if cs := r.TLS; cs != nil {
		rep.TLSVersion = tls.VersionName(cs.Version)
		rep.Cipher = tls.CipherSuiteName(cs.CipherSuite)
		rep.ALPN = cs.NegotiatedProtocol
		rep.SNI = cs.ServerName
		if len(cs.PeerCertificates) > 0 {
			leaf := cs.PeerCertificates[0]
			sum := sha256.Sum256(leaf.Raw)
			rep.ClientSubject = leaf.Subject.String()
			rep.ClientFingerprint = hex.EncodeToString(sum[:])
		}
	}
	body, _ := json.Marshal(rep)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	_, _ = w.Write(append(body, '\n'))
}
