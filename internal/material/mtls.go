package material

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
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
// ALPN).
func TLSConfig(f Files) (*tls.Config, error) {
	cfg, _, err := tlsConfig(f)
	return cfg, err
}

// tlsConfig is [TLSConfig], and the key pair it presents, which is read
// again from its files when they change (package certfiles): a renewed
// certificate is presented at the next connection, with no restart.
func tlsConfig(f Files) (*tls.Config, *certfiles.KeyPair, error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, nil, errors.New("material: a client certificate, its key and the internal CA are all required")
	}
	pair, err := certfiles.Load(f.Cert, f.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("material: %w", err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("material: reading the internal CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("material: %s holds no PEM certificate", f.CA)
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              pool,
		GetClientCertificate: pair.GetClientCertificate,
		NextProtos:           model.DefaultALPN(),
	}, pair, nil
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
	hc := HTTPClient(tlsConf)
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
