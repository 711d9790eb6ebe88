package model

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/certs"
)

// Listener host fields, spelled as in the API (JSON names).
const (
	fieldHostnames   = "hostnames"
	fieldDefault     = "default"
	fieldClientAuth  = "clientAuth"
	fieldClientCAs   = "clientCAs"
	fieldVerifyDepth = "verifyDepth"
)

type clientAuthMode struct {
	name string
	mode tls.ClientAuthType
}

// clientAuthModes maps the clientAuth values to crypto/tls, in the order
// messages list them. The empty value is "none".
var clientAuthModes = []clientAuthMode{
	{"none", tls.NoClientCert},
	{"request", tls.RequestClientCert},
	{"require", tls.RequireAnyClientCert},
	{"verify-if-given", tls.VerifyClientCertIfGiven},
	{"require-and-verify", tls.RequireAndVerifyClientCert},
}

// verifiesClients reports whether mode checks client certificates against
// clientCAs.
func verifiesClients(mode tls.ClientAuthType) bool {
	return mode == tls.VerifyClientCertIfGiven || mode == tls.RequireAndVerifyClientCert
}

// minListenPort is the lowest port a Listener address may have: 1, or 0
// under [AllowPortZero].
func (c *checker) minListenPort() int {
	if c.portZero {
		return 0
	}
	return 1
}

// listener builds a Listener from its spec; at is the path of the spec.
func (c *checker) listener(at fieldPath, name string, spec *policyv1.ListenerSpec) *Listener {
	l := &Listener{Name: name, Address: spec.GetAddress()}
	switch {
	case l.Address == "":
		c.errorf(at.Child("address"), "address is required: give the host:port every proxy node listens on, e.g. \"0.0.0.0:8443\" (all interfaces) or \"127.0.0.1:8443\"")
	default:
		if msg := addressProblem(l.Address, "address", "0.0.0.0", "give the port to listen on", c.minListenPort()); msg != "" {
			c.errorf(at.Child("address"), "%s", msg)
		}
	}

	hostsAt := at.Child("hosts")
	hosts := spec.GetHosts()
	if len(hosts) == 0 {
		// Its hosts may come from tls-inbound bindings (crossCheck warns
		// when none does).
		l.Default = -1
		return l
	}

	// seen locates each hostname already listed, to report duplicates at
	// both places.
	seen := make(map[string]fieldPath)
	defaultAt := -1
	for j, h := range hosts {
		hAt := hostsAt.Index(j)
		l.Hosts = append(l.Hosts, c.listenerHost(hAt, h, seen))
		if h.GetDefault() {
			if defaultAt >= 0 {
				c.errorf(hAt.Child(fieldDefault), "hosts[%d] is already the default; a Listener has at most one default host (the one serving clients that send no SNI or an unknown name): remove default: true from one of them", defaultAt)
			} else {
				defaultAt = j
			}
		}
	}
	l.DefaultSet = defaultAt >= 0
	if defaultAt < 0 {
		defaultAt = 0
		c.warnf(hostsAt, "no host has default: true, so hosts[0] (%s) serves clients that send no SNI or a name no host lists; set default: true on the host that should", strings.Join(hosts[0].GetHostnames(), ", "))
	}
	l.Default = defaultAt
	return l
}

// listenerHost builds one host; seen maps the hostnames of the Listener's
// earlier hosts to their paths.
func (c *checker) listenerHost(at fieldPath, h *policyv1.ListenerHost, seen map[string]fieldPath) ListenerHost {
	var out ListenerHost
	names := c.hostnames(at.Child(fieldHostnames), h.GetHostnames(), seen)
	for _, n := range names {
		out.Hostnames = append(out.Hostnames, n.value)
	}

	certAt := at.Child(fieldCertificate)
	kp := h.GetCertificate()
	keyPEM, crtPEM := kp.GetKey(), kp.GetCrt()
	keystore, alias := kp.GetKeystore(), kp.GetAlias()
	inline, ref := keyPEM != "" || crtPEM != "", keystore != "" || alias != ""
	switch {
	case kp == nil:
		c.errorf(certAt, "certificate is required: give crt (the server certificate in PEM, leaf first, then intermediates) and key (its private key in PEM), or keystore and alias (an alias of the secrets service)")
	case inline && ref:
		c.errorf(certAt, "certificate has both an inline key pair (crt, key) and a reference (keystore, alias); give one form: {crt, key} with the PEM, or {keystore, alias} naming an alias of the secrets service")
	case ref && keystore == "":
		c.errorf(certAt.Child(fieldKeystore), "certificate.keystore is missing: keystore and alias come together; name the keystore that holds alias %q", alias)
	case ref && alias == "":
		c.errorf(certAt.Child(fieldAlias), "certificate.alias is missing: keystore and alias come together; name the alias in keystore %q", keystore)
	case ref:
		if out.CertificateRef = c.aliasRef(certAt, keystore, alias, serverRole); out.CertificateRef != nil {
			// The SANs are checked against the hostnames once the
			// secrets service has described the alias.
			last := &c.refs[len(c.refs)-1]
			last.hostnames, last.hostnamesAt = names, at.Child(fieldHostnames)
		}
	case crtPEM == "" && keyPEM == "":
		c.errorf(certAt, "certificate is empty: give crt (the server certificate in PEM, leaf first, then intermediates) and key (its private key in PEM), or keystore and alias (an alias of the secrets service)")
	case crtPEM == "":
		c.errorf(certAt.Child(fieldCrt), "certificate.crt is missing: give the server certificate in PEM (leaf first, then intermediates) for the key")
	case keyPEM == "":
		c.errorf(certAt.Child(fieldKey), "certificate.key is missing: give the private key of the server certificate in PEM")
	default:
		out.Certificate = c.keyPair(certAt.Child(fieldKey), certAt.Child(fieldCrt), keyPEM, crtPEM, serverRole)
	}
	if out.Certificate != nil {
		c.sansCover(at.Child(fieldHostnames), names, out.Certificate.Leaf)
	}

	out.ClientAuth, out.ClientCAs, out.ClientTruststore = c.clientAuth(at, h.GetClientAuth(), h.GetClientCas(), h.GetClientTruststore())
	out.VerifyDepth = int(h.GetVerifyDepth())
	if out.VerifyDepth > 0 && !verifiesClients(out.ClientAuth) && knownClientAuth(h.GetClientAuth()) {
		c.warnf(at.Child(fieldVerifyDepth), "verifyDepth is ignored because client certificates are not verified with clientAuth: %s; remove it, or use verify-if-given or require-and-verify", ClientAuthName(out.ClientAuth))
	}

	out.Revocation = c.listenerRevocation(at.Child(fieldRevocation), h.GetRevocation(), out.ClientAuth, knownClientAuth(h.GetClientAuth()))

	protocol := c.tlsProtocol(tlsParams{
		at:         at,
		minVersion: textOf(h.GetMinversion()),
		maxVersion: textOf(h.GetMaxversion()),
		ciphers:    itemsOf(h.GetCiphers()),
		alpn:       itemsOf(h.GetAlpn()),
		peers:      "clients",
	})
	out.MinVersion, out.MaxVersion = protocol.minVersion, protocol.maxVersion
	out.CipherSuites, out.ALPN = protocol.cipherSuites, protocol.alpn

	out.Fingerprint = hostFingerprint(&out)
	return out
}

// textOf is a proto string setting: empty means not given.
func textOf(s string) textSetting {
	if s == "" {
		return textSetting{state: absent}
	}
	return textSetting{text: s, state: present}
}

// itemsOf is a proto list setting: proto3 cannot tell an empty list from an
// absent one, so empty means not given.
func itemsOf(values []string) listSetting {
	if len(values) == 0 {
		return listSetting{state: absent}
	}
	items := make([]listItem, len(values))
	for i, v := range values {
		items[i] = listItem{index: i, value: v}
	}
	return listSetting{items: items, state: present}
}

// hostnames checks a host's SNI names. It returns the valid ones with their
// indexes, and records them in seen.
func (c *checker) hostnames(at fieldPath, names []string, seen map[string]fieldPath) []listItem {
	if len(names) == 0 {
		c.errorf(at, "hostnames is required: list the SNI names this host serves, e.g. [example.com, \"*.example.com\"]")
		return nil
	}
	var out []listItem
	for k, name := range names {
		p := at.Index(k)
		if msg := hostnameProblem(name); msg != "" {
			c.errorf(p, "%s", msg)
			continue
		}
		if first, dup := seen[name]; dup {
			c.errorf(p, "hostname %q is also at %s; each hostname is served by one host of a Listener: remove one", name, first)
			continue
		}
		seen[name] = p
		out = append(out, listItem{index: k, value: name})
	}
	return out
}

// hostnameProblem says what is wrong with an SNI name, or "" when it is a
// lowercase DNS name, possibly with one leading wildcard label.
func hostnameProblem(name string) string {
	base, _ := strings.CutPrefix(name, "*.")
	switch {
	case name == "":
		return "hostname is empty; give a DNS name such as \"example.com\" or \"*.example.com\""
	case isIP(name):
		return fmt.Sprintf("%q is an IP address; clients send only DNS names in SNI (a client connecting by IP sends none and gets the default host): list DNS names here", name)
	case strings.Contains(base, "*"):
		return fmt.Sprintf("%q: a wildcard is allowed only as the whole first label, as in \"*.example.com\"; list such names one by one, or use one leading \"*.\"", name)
	case !isDNSName(base):
		return fmt.Sprintf("%q is not a DNS name (letters, digits, hyphens and dots, without port, scheme or trailing dot); give a name such as \"example.com\" or \"*.example.com\"", name)
	case strings.ToLower(name) != name:
		return fmt.Sprintf("%q has uppercase letters; hostnames are lowercase (SNI compares them so): write %q", name, strings.ToLower(name))
	}
	return ""
}

// sansCover reports each hostname that the server certificate has no DNS
// SAN for: clients would refuse the handshake. at is the path of hostnames.
func (c *checker) sansCover(at fieldPath, names []listItem, leaf *x509.Certificate) {
	warned := false
	for _, it := range names {
		name := it.value
		if sanCovers(leaf.DNSNames, name) {
			continue
		}
		if len(leaf.IPAddresses) == 0 && certs.CommonNameCovers(leaf, name) {
			if !warned {
				c.warnf(at.Index(it.index), "%s", certs.CNOnlyServerWarning(leaf))
				warned = true
			}
			continue
		}
		have := "it has no DNS SAN"
		if len(leaf.DNSNames) > 0 {
			have = "its DNS SANs are " + strings.Join(leaf.DNSNames, ", ")
		}
		if len(leaf.DNSNames) == 0 && leaf.Subject.CommonName != "" {
			have += " (clients ignore the CN)"
		}
		c.errorf(at.Index(it.index), "hostname %q is not covered by the server certificate %s (%s), so clients will refuse the connection; reissue the certificate with a SAN for it, e.g. `openssl req -new -key key.pem -subj \"/CN=%s\" -addext \"subjectAltName=DNS:%s\" -out req.csr` and have the CA sign it keeping the SAN (`openssl x509 -req -in req.csr -CA ca.crt -CAkey ca.key -copy_extensions copy -days 365 -out cert.pem`: OpenSSL 3 drops request extensions without -copy_extensions), or move the hostname to a host whose certificate covers it", name, certs.Describe(leaf), have, name, name)
	}
}

// sanCovers reports whether one of the DNS SANs covers name: the same name,
// or a wildcard SAN standing for exactly its first label. A wildcard hostname
// is covered only by the same wildcard SAN.
func sanCovers(sans []string, name string) bool {
	for _, san := range sans {
		san = strings.ToLower(strings.TrimSuffix(san, "."))
		if san == name {
			return true
		}
		suffix, isWildcard := strings.CutPrefix(san, "*.")
		if !isWildcard || strings.HasPrefix(name, "*.") {
			continue
		}
		first, rest, ok := strings.Cut(name, ".")
		if ok && first != "" && rest == suffix {
			return true
		}
	}
	return false
}

// clientAuth reads clientAuth with clientCAs or clientTruststore: one of
// them is required exactly when the mode verifies client certificates.
func (c *checker) clientAuth(at fieldPath, name, cas, truststore string) (tls.ClientAuthType, []*x509.Certificate, string) {
	mode := tls.NoClientCert
	for _, m := range clientAuthModes {
		if m.name == name {
			mode = m.mode
		}
	}
	casAt, storeAt := at.Child(fieldClientCAs), at.Child(fieldClientTruststore)
	if cas != "" && truststore != "" {
		c.errorf(storeAt, "clientCAs and clientTruststore are both given; give one: the CA PEM in clientCAs, or the name of a truststore of the secrets service in clientTruststore")
		return mode, nil, ""
	}
	if !knownClientAuth(name) {
		names := make([]string, len(clientAuthModes))
		for i, m := range clientAuthModes {
			names[i] = m.name
		}
		msg := fmt.Sprintf("clientAuth %q is not supported; use one of %s", name, quoteList(names))
		if s := DidYouMean(name, names); s != "" {
			msg += fmt.Sprintf(": did you mean %q?", s)
		}
		c.errorf(at.Child(fieldClientAuth), "%s", msg)
		// Without a known mode, whether clientCAs belongs cannot be told;
		// still check what it holds.
		if cas != "" {
			return mode, c.clientCAs(casAt, cas), ""
		}
		return mode, nil, ""
	}

	switch {
	case verifiesClients(mode) && cas == "" && truststore == "":
		c.errorf(casAt, "clientCAs is required with clientAuth: %s: give the PEM of the CA certificates that issue client certificates (one or more -----BEGIN CERTIFICATE----- blocks), or clientTruststore: NAME for a truststore of the secrets service", name)
	case !verifiesClients(mode) && cas != "":
		c.errorf(casAt, "clientCAs would be ignored with clientAuth: %s, which does not verify client certificates; use clientAuth: verify-if-given or require-and-verify to verify them against these CAs, or remove clientCAs", ClientAuthName(mode))
	case !verifiesClients(mode) && truststore != "":
		c.errorf(storeAt, "clientTruststore would be ignored with clientAuth: %s, which does not verify client certificates; use clientAuth: verify-if-given or require-and-verify to verify them against this truststore, or remove clientTruststore", ClientAuthName(mode))
	case cas != "":
		return mode, c.clientCAs(casAt, cas), ""
	case truststore != "":
		return mode, nil, c.truststoreRef(storeAt, truststore)
	}
	return mode, nil, ""
}

// knownClientAuth reports whether name is a clientAuth value ("" is none).
func knownClientAuth(name string) bool {
	return name == "" || slices.ContainsFunc(clientAuthModes, func(m clientAuthMode) bool { return m.name == name })
}

// ClientAuthName is the API spelling of a client auth mode, as the
// Listener resource writes it: none, request, require, verify-if-given,
// require-and-verify. Status and messages name modes with it.
func ClientAuthName(mode tls.ClientAuthType) string {
	for _, m := range clientAuthModes {
		if m.mode == mode {
			return m.name
		}
	}
	return mode.String()
}

// clientCAs parses the CA bundle that verifies client certificates. Every
// certificate must be a CA. An expired (or not yet valid) CA next to a valid
// one is a warning, the overlap of a rotation; when none is valid now, no
// client can be verified and each is an error.
func (c *checker) clientCAs(at fieldPath, data string) []*x509.Certificate {
	return c.caBundle(at, fieldClientCAs, data)
}

// caBundle is clientCAs for a field with another name (tls-inbound's
// trustedCA); label is the field name messages use.
func (c *checker) caBundle(at fieldPath, label, data string) []*x509.Certificate {
	cas, err := certs.ParsePEMCertificates(data)
	if err != nil {
		c.errorf(at, "%s %s", label, err)
		return nil
	}
	before := c.errorCount()
	var outside []int // indexes of certificates outside their validity
	for i, cert := range cas {
		c.report.Certificates = append(c.report.Certificates, CertificateInfo{Field: string(at), Cert: cert, Fingerprint: certs.Fingerprint(cert), NotAfter: cert.NotAfter})
		if !cert.IsCA && certs.IsV1Root(cert) {
			c.warnf(at, "%s", certs.V1RootWarning(fmt.Sprintf("%s certificate %d", label, i+1), cert))
		} else if !cert.IsCA {
			c.errorf(at, "%s certificate %d (%s) is not a CA certificate; %s holds the CAs that issue client certificates: give the issuing CA's certificate instead (`openssl x509 -in ca.pem -noout -ext basicConstraints` shows CA:TRUE)", label, i+1, certs.Describe(cert), label)
		}
		if !c.decode && certs.ValidityProblem(cert, c.now) != "" {
			outside = append(outside, i)
		}
	}
	for _, i := range outside {
		cert := cas[i]
		if len(outside) == len(cas) {
			c.errorf(at, "%s certificate %d (%s) %s, and no certificate in %s is valid now, so no client certificate can be verified; give the CA's current certificate", label, i+1, certs.Describe(cert), certs.ValidityProblem(cert, c.now), label)
		} else {
			c.warnf(at, "%s certificate %d (%s) %s; clients whose certificates chain only to it will be refused: remove it once the rotation is over", label, i+1, certs.Describe(cert), certs.ValidityProblem(cert, c.now))
		}
	}
	if c.errorCount() != before {
		return nil
	}
	return cas
}

// listenerAddresses reports two Listeners on one address, in the request or
// one in the request and one stored that the request does not replace.
func (c *checker) listenerAddresses(entries []built, stored Catalog) {
	type owner struct {
		name   string
		stored bool
	}
	replaced := make(map[string]bool)
	for _, e := range entries {
		if e.obj.Listener != nil {
			replaced[e.obj.Listener.Name] = true
		}
	}
	owners := make(map[string]owner)
	for _, l := range stored.Listeners() {
		if !replaced[l.Name] {
			owners[addressKey(l.Address)] = owner{l.Name, true}
		}
	}
	for _, e := range entries {
		l := e.obj.Listener
		if l == nil || l.Address == "" || addressProblem(l.Address, "", "", "", c.minListenPort()) != "" {
			continue
		}
		key := addressKey(l.Address)
		if o, taken := owners[key]; taken && o.name != l.Name {
			where := "in this request"
			if o.stored {
				where = "stored"
			}
			c.errorf(e.at.Child("spec").Child("address"), "address %q is already used by Listener %q (%s); one address takes one Listener: add these hosts to that Listener, or choose another port", l.Address, o.name, where)
			continue
		}
		owners[key] = owner{l.Name, false}
	}
}

// addressKey normalises host:port for comparison: host names are
// case-insensitive and IP addresses have several spellings.
func addressKey(address string) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return strings.ToLower(address)
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}
