package model

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// service builds a Service from its spec; at is the path of the spec.
//
// An address (or every endpoint) may carry a scheme, as Flex Gateway's
// Service does: https:// means TLS even without a tls-outbound binding,
// verified against the system's trusted roots ([Service.DefaultTLS]);
// http:// and no scheme mean plain HTTP. A tls-outbound binding replaces
// either.
func (c *checker) service(at fieldPath, name string, spec *policyv1.ServiceSpec) *Service {
	svc := &Service{Name: name, Protocol: ProtocolHTTP1}
	address, endpoints := spec.GetAddress(), spec.GetEndpoints()
	https := false
	switch {
	case address != "" && len(endpoints) > 0:
		c.errorf(at, "address and endpoints are both set; give one: address for a single host:port, endpoints for several")
	case address == "" && len(endpoints) == 0:
		c.errorf(at.Child("address"), "the Service has no endpoint; set address: host:port (e.g. orders.internal:8443), or endpoints: [host:port, ...] for several")
	case address != "":
		hostPort, scheme, msg := splitScheme(address, "address")
		if msg == "" {
			msg = hostPortProblem(hostPort)
		}
		if msg != "" {
			c.errorf(at.Child("address"), "%s", msg)
		}
		https = scheme == schemeHTTPS
		svc.Endpoints = []string{hostPort}
	default:
		seen := make(map[string]int, len(endpoints))
		first := ""
		for i, ep := range endpoints {
			p := at.Child("endpoints").Index(i)
			hostPort, scheme, msg := splitScheme(ep, "endpoint")
			if msg == "" {
				msg = hostPortProblem(hostPort)
			}
			switch {
			case msg != "":
				c.errorf(p, "%s", msg)
			case i > 0 && (scheme == schemeHTTPS) != (first == schemeHTTPS):
				c.errorf(p, "endpoint %q and endpoints[0] %q disagree on TLS: give every endpoint https://, or none", ep, endpoints[0])
			default:
				if j, dup := seen[strings.ToLower(hostPort)]; dup {
					c.errorf(p, "endpoint %q is listed twice (also endpoints[%d]); remove one", ep, j)
				}
			}
			if i == 0 {
				first = scheme
			}
			seen[strings.ToLower(hostPort)] = i
			svc.Endpoints = append(svc.Endpoints, hostPort)
		}
		https = first == schemeHTTPS
	}
	if https {
		svc.DefaultTLS = c.systemRootsTLS(at)
	}

	switch p := spec.GetProtocol(); p {
	case "", ProtocolHTTP1:
	case ProtocolH2, ProtocolGRPC:
		svc.Protocol = p
	default:
		msg := fmt.Sprintf("protocol %q is not supported; use %q (default), %q or %q", p, ProtocolHTTP1, ProtocolH2, ProtocolGRPC)
		if s := suggestProtocol(p); s != "" {
			msg += fmt.Sprintf(": did you mean %q?", s)
		}
		c.errorf(at.Child("protocol"), "%s", msg)
	}
	return svc
}

// Schemes a Service address may carry.
const (
	schemeHTTPS = "https"
	schemeHTTP  = "http"
)

// splitScheme cuts an optional "https://" or "http://" from a Service
// address and returns the host:port, the scheme ("" when none) and what is
// wrong, if anything; what names the field in messages.
func splitScheme(s, what string) (hostPort, scheme, problem string) {
	scheme, rest, found := strings.Cut(s, "://")
	if !found {
		return s, "", ""
	}
	switch strings.ToLower(scheme) {
	case schemeHTTPS, schemeHTTP:
		scheme = strings.ToLower(scheme)
	default:
		return s, "", fmt.Sprintf("%s %q: scheme %q is not supported; write https://host:port (TLS verified against the system's trusted roots, until a tls-outbound binding says otherwise), http://host:port or host:port (plain HTTP)", what, s, scheme)
	}
	if rest = strings.TrimSuffix(rest, "/"); strings.ContainsAny(rest, "/?#@") {
		return s, "", fmt.Sprintf("%s %q has a path, query or user; a Service is %s://host:port only: Keyway forwards the request path as it came", what, s, scheme)
	}
	if _, _, err := net.SplitHostPort(rest); err != nil && strings.Contains(err.Error(), "missing port") {
		port := "443"
		if scheme == schemeHTTP {
			port = "80"
		}
		return s, "", fmt.Sprintf("%s %q has no port; write %s://%s:%s", what, s, scheme, rest, port)
	}
	return rest, scheme, ""
}

// systemRootsTLS is the TLS context of an https:// Service that no
// tls-outbound binding targets: what a binding with skipValidation: false
// and no other field would give (TLS 1.2 to 1.3, Go's cipher suites, ALPN
// h2 and http/1.1, the SNI and name check of the Service's host), with the
// system's trusted roots as its CAs. Flex Gateway reaches such a Service
// over TLS too; its own default allows TLS 1.2 only.
func (c *checker) systemRootsTLS(at fieldPath) *OutboundTLS {
	p := c.tlsProtocol(tlsParams{
		at:         at,
		minVersion: textSetting{state: absent},
		maxVersion: textSetting{state: absent},
		ciphers:    listSetting{state: absent},
		alpn:       listSetting{state: absent},
		peers:      "upstreams",
	})
	out := &OutboundTLS{SystemRoots: true, MinVersion: p.minVersion, MaxVersion: p.maxVersion, CipherSuites: p.cipherSuites, ALPN: p.alpn}
	out.Fingerprint = fingerprint(out)
	return out
}

// suggestProtocol maps common spellings to a protocol constant.
func suggestProtocol(p string) string {
	switch strings.ToLower(p) {
	case "http1", "http", "http/1.1", "http1.1", "http/1", "https":
		return ProtocolHTTP1
	case "h2", "http2", "http/2", "h2c", "https2":
		return ProtocolH2
	case "grpc", "grpcs", "grpc+tls":
		return ProtocolGRPC
	}
	return ""
}

// hostPortProblem checks an endpoint "host:port" and returns what is wrong
// with it and how to fix it, or "" when it is valid.
func hostPortProblem(s string) string {
	return addressProblem(s, "endpoint", "orders.internal", "give the port the upstream listens on", 1)
}

// addressProblem checks a "host:port" (a Service endpoint, a Listener
// address); what names it in messages, exampleHost is a host to show in
// examples and portFix says which port to give. The port is from minPort
// (1; 0 only under [AllowPortZero]) to 65535.
func addressProblem(s, what, exampleHost, portFix string, minPort int) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		switch {
		case strings.Contains(s, "://"):
			return fmt.Sprintf("%s %q is a URL; write host:port without a scheme or path, e.g. \"%s:8443\"", what, s, exampleHost)
		case strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "["):
			return fmt.Sprintf("%s %q: an IPv6 address goes in brackets before the port, e.g. \"[2001:db8::1]:8443\"", what, s)
		case !strings.Contains(s, ":") || strings.Contains(err.Error(), "missing port"):
			return fmt.Sprintf("%s %q has no port; write host:port, e.g. %q", what, s, s+":443")
		}
		return fmt.Sprintf("%s %q is not host:port (%v); write e.g. \"%s:8443\"", what, s, err, exampleHost)
	}
	if host == "" {
		return fmt.Sprintf("%s %q has no host; write host:port, e.g. \"%s%s\"", what, s, exampleHost, s)
	}
	if port == "" {
		return fmt.Sprintf("%s %q has no port; write host:port, e.g. %q", what, s, host+":443")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < minPort || n > 65535 {
		return fmt.Sprintf("%s %q: port %q is not a number from 1 to 65535; %s", what, s, port, portFix)
	}
	if !isIP(host) && !isDNSName(host) {
		return fmt.Sprintf("%s %q: host %q is neither a DNS name (letters, digits, hyphens and dots) nor an IP address", what, s, host)
	}
	return ""
}
