package material

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"
	"keyway.dev/internal/certfiles"
	"keyway.dev/internal/failover"
	"keyway.dev/internal/model"
)

// DefaultInternalURL is MaterialService's address in the local stack.
const DefaultInternalURL = "https://127.0.0.1:8092"

// Files are the PEM files of a MaterialService client: its certificate
// (issued to a proxy node by the internal CA) and key, and the CA that
// issued the secrets service's internal certificate.
type Files struct {
	Cert string
	Key  string
	CA   string
}

// TLSConfig loads the files into a client tls.Config (TLS 1.3, HTTP/2 by
// ALPN). Its client certificate is read again when its files change; its
// CA is the bundle as read now: [HTTPClientFromFiles] follows the CA file
// too.
func TLSConfig(f Files) (*tls.Config, error) {
	cfg, _, _, err := tlsConfig(f)
	return cfg, err
}

// tlsConfig is [TLSConfig], the key pair it presents and the CA bundle,
// both read again from their files when they change (package certfiles):
// a renewed certificate is presented, and a rotated CA trusted, at the
// next connection, with no restart.
func tlsConfig(f Files) (*tls.Config, *certfiles.KeyPair, *certfiles.Bundle, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, nil, nil, errors.New("material: a client certificate, its key and the internal CA are all required")
	}
	pair, err := certfiles.Load(f.Cert, f.Key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("material: %w", err)
	}
	bundle, err := certfiles.LoadBundle(f.CA)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("material: the internal CA: %w", err)
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              bundle.Pool(),
		GetClientCertificate: pair.GetClientCertificate,
		NextProtos:           model.DefaultALPN(),
	}, pair, bundle, nil
}

// HTTPClient is an HTTP client that speaks TLS with tlsConf (HTTP/2 when
// the server offers it).
func HTTPClient(tlsConf *tls.Config) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConf.Clone()
	transport.ForceAttemptHTTP2 = true
	transport.TLSHandshakeTimeout = 10 * time.Second
	return &http.Client{Transport: transport}
}

// HTTPClientFromFiles is [HTTPClient] for the files: the client
// certificate and the CA bundle are read again when they change, so that
// both rotate without a restart (each new connection uses the current
// ones).
func HTTPClientFromFiles(f Files) (*http.Client, error) {
	cfg, _, bundle, err := tlsConfig(f)
	if err != nil {
		return nil, err
	}
	return httpClientWith(cfg, bundle), nil
}

// httpClientWith is [HTTPClient], each connection verifying the server
// against the bundle's current CAs.
func httpClientWith(tlsConf *tls.Config, bundle *certfiles.Bundle) *http.Client {
	c := HTTPClient(tlsConf)
	t := c.Transport.(*http.Transport)
	// A new config per connection; the transport then negotiates HTTP/2
	// by the connection's ALPN as with its own TLS dial.
	t.DialTLSContext = bundle.DialTLS(tlsConf, &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second})
	return c
}

// NewServiceClient returns the generated MaterialService client for baseURL
// ("https://host:port", or the replicas' comma-separated) over mTLS with
// tlsConf. [Client] wraps it with timeouts and parsing; tests that probe
// the port itself use it bare.
func NewServiceClient(baseURL string, tlsConf *tls.Config, opts ...connect.ClientOption) secretsv1connect.MaterialServiceClient {
	hc, base, err := ReplicatedHTTPClient(baseURL, tlsConf)
	if err != nil {
		// New has checked the list; a caller of this one gets the
		// error from the first request instead.
		hc, base = HTTPClient(tlsConf), strings.TrimSuffix(baseURL, "/")
	}
	return secretsv1connect.NewMaterialServiceClient(hc, base, opts...)
}

// ReplicatedHTTPClient is [HTTPClient] for a service given as one base URL
// or as its replicas' base URLs, comma-separated: with several, a request
// goes to the replica that answered last and moves on to the others when
// it cannot be reached (package failover). It returns the client and the
// base URL to build a Connect client on.
func ReplicatedHTTPClient(baseURLs string, tlsConf *tls.Config) (*http.Client, string, error) {
	return Replicated(HTTPClient(tlsConf), baseURLs)
}

// Replicated is hc for baseURLs, one base URL or the replicas'
// comma-separated, as [ReplicatedHTTPClient] says; hc's transport is
// wrapped, not copied.
func Replicated(hc *http.Client, baseURLs string) (*http.Client, string, error) {
	urls := failover.Split(baseURLs)
	if len(urls) <= 1 {
		return hc, strings.TrimSuffix(strings.TrimSpace(baseURLs), "/"), nil
	}
	for i, u := range urls {
		urls[i] = strings.TrimSuffix(u, "/")
	}
	tr, err := failover.New(urls, hc.Transport)
	if err != nil {
		return nil, "", err
	}
	hc.Transport = tr
	return hc, urls[0], nil
}

// NewServiceClientFromFiles is [NewServiceClient] with the TLS configuration
// loaded from files.
func NewServiceClientFromFiles(baseURL string, f Files, opts ...connect.ClientOption) (secretsv1connect.MaterialServiceClient, error) {
	tlsConf, err := TLSConfig(f)
	if err != nil {
		return nil, err
	}
	return NewServiceClient(baseURL, tlsConf, opts...), nil
}
