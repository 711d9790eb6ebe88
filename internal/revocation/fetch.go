package revocation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// maxLocation bounds the length of a CRL location or responder URL.
const maxLocation = 2048

// ParseLocation checks where a CRL is read from and returns it in the form
// a [Policy] takes: an http:// or https:// URL, or an absolute file path
// (file:///path is read as /path). LDAP and relative paths are refused,
// with the reason.
func ParseLocation(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("the CRL location is empty: give an http:// or https:// URL, or an absolute file path")
	case len(s) > maxLocation:
		return "", fmt.Errorf("the CRL location is %d bytes long; at most %d", len(s), maxLocation)
	case strings.ContainsAny(s, "\x00\r\n"):
		return "", errors.New("the CRL location holds a control character")
	}
	if !strings.Contains(s, "://") {
		if !filepath.IsAbs(s) {
			return "", fmt.Errorf("the CRL file %q is a relative path: give an absolute path, or an http:// or https:// URL", s)
		}
		return filepath.Clean(s), nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("the CRL URL %q does not parse: %w", s, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return "", fmt.Errorf("the CRL URL %q has no host", s)
		}
		if u.User != nil {
			return "", fmt.Errorf("the CRL URL %q holds credentials; CRLs are public: remove them", u.Redacted())
		}
		return u.String(), nil
	case "file":
		if u.Host != "" && u.Host != "localhost" || !filepath.IsAbs(u.Path) {
			return "", fmt.Errorf("the CRL URL %q: a file URL is file:///absolute/path", s)
		}
		return filepath.Clean(u.Path), nil
	case "ldap", "ldaps":
		return "", fmt.Errorf("the CRL URL %q: LDAP is not supported; give an http:// or https:// URL where the CA publishes the same list", s)
	}
	return "", fmt.Errorf("the CRL URL %q: scheme %q is not supported; give an http:// or https:// URL, or an absolute file path", s, u.Scheme)
}

// fetchable reports whether a distribution point from a certificate is a
// URL this package fetches: only http, which is what CAs publish CRLs on
// (RFC 5280 section 4.2.1.13), and https.
func fetchable(location string) bool {
	return len(location) <= maxLocation && (strings.HasPrefix(location, "http://") || strings.HasPrefix(location, "https://"))
}

func isFile(location string) bool { return strings.HasPrefix(location, "/") }

// validators are what a server said about the last body it sent, for a
// conditional request.
type validators struct {
	etag, lastModified string
}

// errNotModified is a conditional fetch that the server answered with 304.
var errNotModified = errors.New("not modified")

// fetchCRL reads the CRL at location: a file, or an HTTP GET answered with
// 200 (or 304 to a conditional request, as errNotModified). At most limit
// bytes are read; ctx bounds the time.
func fetchCRL(ctx context.Context, client *http.Client, location string, limit int64, prev validators) ([]byte, validators, error) {
	if isFile(location) {
		data, err := readFile(location, limit)
		return data, validators{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, location, nil)
	if err != nil {
		return nil, validators{}, fmt.Errorf("making request: %w", err)
	}
	req.Header.Set("Accept", "application/pkix-crl, application/x-pkcs7-crl;q=0.5, */*;q=0.1")
	if prev.etag != "" {
		req.Header.Set("If-None-Match", prev.etag)
	}
	if prev.lastModified != "" {
		req.Header.Set("If-Modified-Since", prev.lastModified)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, validators{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	v := validators{etag: resp.Header.Get("ETag"), lastModified: resp.Header.Get("Last-Modified")}
	switch {
	case resp.StatusCode == http.StatusNotModified && (prev.etag != "" || prev.lastModified != ""):
		return nil, prev, errNotModified
	case resp.StatusCode != http.StatusOK:
		return nil, validators{}, fmt.Errorf("server answered %s", resp.Status)
	case resp.ContentLength > limit:
		return nil, validators{}, fmt.Errorf("CRL is %d bytes, more than the limit of %d", resp.ContentLength, limit)
	}
	data, err := readLimited(resp.Body, limit)
	if err != nil {
		return nil, validators{}, err
	}
	return data, v, nil
}

func readFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	return readLimited(f, limit)
}

// readLimited reads r to its end, refusing more than limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	if n > limit {
		return nil, fmt.Errorf("more than the limit of %d bytes", limit)
	}
	return buf.Bytes(), nil
}
