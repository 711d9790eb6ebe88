package model

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// service builds a Service from its spec; at is the path of the spec.
func (c *checker) service(at fieldPath, name string, spec *policyv1.ServiceSpec) *Service {
	svc := &Service{Name: name, Protocol: ProtocolHTTP1}
	address, endpoints := spec.GetAddress(), spec.GetEndpoints()
	switch {
	case address != "" && len(endpoints) > 0:
		c.errorf(at, "address and endpoints are both set; give one: address for a single host:port, endpoints for several")
	case address == "" && len(endpoints) == 0:
		c.errorf(at.Child("address"), "the Service has no endpoint; set address: host:port (e.g. orders.internal:8443), or endpoints: [host:port, ...] for several")
	case address != "":
		if msg := hostPortProblem(address); msg != "" {
			c.errorf(at.Child("address"), "%s", msg)
		}
		svc.Endpoints = []string{address}
	default:
		seen := make(map[string]int, len(endpoints))
		for i, ep := range endpoints {
			p := at.Child("endpoints").Index(i)
			if msg := hostPortProblem(ep); msg != "" {
				c.errorf(p, "%s", msg)
			} else if j, dup := seen[strings.ToLower(ep)]; dup {
				c.errorf(p, "endpoint %q is listed twice (also endpoints[%d]); remove one", ep, j)
			}
			seen[strings.ToLower(ep)] = i
		}
		svc.Endpoints = append([]string(nil), endpoints...)
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
