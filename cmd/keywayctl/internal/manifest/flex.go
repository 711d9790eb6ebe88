package manifest

import (
	"fmt"
	"net"
	"net/url"

	"go.yaml.in/yaml/v3"

	"keyway.dev/keywayctl/internal/resource"
)

// convertFlexService turns Flex Gateway's Service, whose spec.address is a
// URL, into a Keyway Service, whose address is host:port: the YAML nodes are
// rewritten in place, so positions stay those of the user's file. It
// reports whether the document can be decoded.
//
// Flex says TLS with the https:// scheme; Keyway says it with a tls-outbound
// PolicyBinding targeting the Service, so the conversion adds a note.
func (p *parser) convertFlexService(doc *Document, n, apiVersion *yaml.Node) bool {
	var name string
	if nn := lookupPath(n, "metadata", "name"); nn != nil {
		name = deref(nn).Value
	}
	addr := lookupPath(n, "spec", "address")
	if addr == nil {
		p.errorf(n, "Service %q (%s): missing spec.address, a URL such as https://orders.internal:9443", name, resource.FlexAPIVersion)
		return false
	}
	addr = deref(addr)
	u, err := url.Parse(addr.Value)
	if err != nil || u.Host == "" {
		p.errorf(addr, "spec.address: %q is not a URL; Flex Gateway Services are written as http://host:port or https://host:port", addr.Value)
		return false
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		p.errorf(addr, "spec.address: %q has a path, query or user; a Keyway Service is host:port only", addr.Value)
		return false
	}
	var port string
	switch u.Scheme {
	case "https":
		port = "443"
	case "http":
		port = "80"
	default:
		p.errorf(addr, "spec.address: scheme %q is not supported; want http or https", u.Scheme)
		return false
	}
	if u.Port() != "" {
		port = u.Port()
	}
	hostPort := net.JoinHostPort(u.Hostname(), port)
	msg := fmt.Sprintf("Service %q (%s): spec.address %q becomes %q", name, resource.FlexAPIVersion, addr.Value, hostPort)
	if u.Scheme == "https" {
		msg += "; TLS to the upstream comes from a tls-outbound PolicyBinding targeting the Service, not from the address"
	}
	doc.Notes = append(doc.Notes, Note{Pos: p.pos(addr), Msg: msg})
	addr.Value, addr.Tag, addr.Style = hostPort, "!!str", 0
	apiVersion.Value = resource.APIVersion
	return true
}

// lookupPath follows keys through nested mappings; nil when one is missing.
func lookupPath(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n = lookup(n, k); n == nil {
			return nil
		}
	}
	return n
}
