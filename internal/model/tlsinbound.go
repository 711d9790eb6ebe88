package model

import (
	"crypto/tls"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// tls-inbound config fields: Flex Gateway's inbound tls policy, field for
// field (requireClientCertificate, trustedCA, certificate, alpn, minversion,
// maxversion, ciphers), plus the Listener host's hostnames, default,
// clientAuth, verifyDepth and revocation.
const (
	fieldRequireClientCertificate = "requireClientCertificate"
)

var inboundFields = []string{
	fieldHostnames, fieldDefault, fieldCertificate, fieldRequireClientCertificate, fieldClientAuth,
	fieldTrustedCA, fieldVerifyDepth, fieldALPN, fieldMinVersion, fieldMaxVersion, fieldCiphers,
	fieldRevocation,
}

// inboundTLS builds the host a tls-inbound binding adds to its Listener;
// at is the path of the config.
func (c *checker) inboundTLS(at fieldPath, cfg *structpb.Struct) *InboundTLS {
	if cfg == nil {
		c.errorf(at, "config is required for tls-inbound: give at least certificate: {crt: <server certificate PEM>, key: <its key PEM>}")
		return nil
	}
	o := configObject{c: c, at: at, fields: cfg.GetFields()}
	o.unknownKeys(inboundFields, "tls-inbound config")
	out := &InboundTLS{}
	h := &out.Host

	var names []listItem
	if items, state := o.stringList(fieldHostnames); state == present && len(items) > 0 {
		names = c.hostnames(at.Child(fieldHostnames), itemValues(items), make(map[string]fieldPath))
		for _, n := range names {
			h.Hostnames = append(h.Hostnames, n.value)
		}
	}
	def, defState := o.boolean(fieldDefault)
	switch {
	case len(h.Hostnames) == 0 && defState == present && !def:
		c.errorf(at.Child(fieldDefault), "default: false needs hostnames: without hostnames the binding is the Listener's port-level context, which serves every client no host lists; list the SNI names it serves, or remove default")
	case len(h.Hostnames) == 0:
		out.Default = true
	default:
		out.Default = def
	}

	if cert, state := o.object(fieldCertificate); state == present {
		cert.unknownKeys(certificateFields, "certificate")
		keyPEM, keyState := cert.str(fieldKey)
		crtPEM, crtState := cert.str(fieldCrt)
		keystore, ksState := cert.str(fieldKeystore)
		alias, aliasState := cert.str(fieldAlias)
		ref := ksState != absent || aliasState != absent
		switch {
		case ref && (keyState != absent || crtState != absent):
			c.errorf(cert.at, "certificate has both an inline key pair (crt, key) and a reference (keystore, alias); give one form: {crt, key} with the PEM, or {keystore, alias} naming an alias of the secrets service")
		case ref && ksState == absent:
			c.errorf(cert.at.Child(fieldKeystore), "certificate.keystore is missing: keystore and alias come together; name the keystore that holds alias %q", alias)
		case ref && aliasState == absent:
			c.errorf(cert.at.Child(fieldAlias), "certificate.alias is missing: keystore and alias come together; name the alias in keystore %q", keystore)
		case ref:
			if ksState == present && aliasState == present {
				if h.CertificateRef = c.aliasRef(cert.at, keystore, alias, serverRole); h.CertificateRef != nil {
					last := &c.refs[len(c.refs)-1]
					last.hostnames, last.hostnamesAt = names, at.Child(fieldHostnames)
				}
			}
		case crtState == absent:
			c.errorf(cert.at.Child(fieldCrt), "certificate.crt is missing: give the server certificate in PEM (leaf first, then intermediates), or {keystore, alias} instead")
		case keyState == absent:
			c.errorf(cert.at.Child(fieldKey), "certificate.key is missing: give the private key of the server certificate in PEM")
		case keyState == present && crtState == present:
			h.Certificate = c.keyPair(cert.at.Child(fieldKey), cert.at.Child(fieldCrt), keyPEM, crtPEM, serverRole)
		}
	} else if state == absent {
		c.errorf(at.Child(fieldCertificate), "certificate is required: give crt (the server certificate in PEM, leaf first, then intermediates) and key (its private key in PEM), or keystore and alias (an alias of the secrets service)")
	}
	if h.Certificate != nil {
		c.sansCover(at.Child(fieldHostnames), names, h.Certificate.Leaf)
	}

	h.ClientAuth = c.inboundClientAuth(o)
	trusted, truststore, trustedState := c.inboundTrustedCA(o)
	switch {
	case verifiesClients(h.ClientAuth) && trustedState == absent:
		c.errorf(at.Child(fieldTrustedCA), "trustedCA is required to verify client certificates (clientAuth: %s): give the PEM of the CA certificates that issue client certificates", ClientAuthName(h.ClientAuth))
	case !verifiesClients(h.ClientAuth) && trustedState == present:
		c.errorf(at.Child(fieldTrustedCA), "trustedCA would be ignored with clientAuth: %s, which does not verify client certificates; remove clientAuth (trustedCA alone verifies certificates clients give), or use verify-if-given or require-and-verify", ClientAuthName(h.ClientAuth))
	case trustedState == present && truststore != "":
		h.ClientTruststore = c.truststoreRef(at.Child(fieldTrustedCA).Child(fieldTruststore), truststore)
	case trustedState == present:
		h.ClientCAs = c.caBundle(at.Child(fieldTrustedCA), fieldTrustedCA, trusted)
	}

	if v := o.value(fieldVerifyDepth); v != nil {
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		switch {
		case !ok:
			o.wrongType(fieldVerifyDepth, v, "a number", "write the longest client chain accepted, leaf included, e.g. 3")
		case n.NumberValue < 0 || n.NumberValue != math.Trunc(n.NumberValue) || n.NumberValue > 100:
			c.errorf(at.Child(fieldVerifyDepth), "verifyDepth %v is not a whole number from 0 to 100; give the longest client chain accepted, leaf included (0: no limit)", n.NumberValue)
		default:
			h.VerifyDepth = int(n.NumberValue)
			if h.VerifyDepth > 0 && !verifiesClients(h.ClientAuth) {
				c.warnf(at.Child(fieldVerifyDepth), "verifyDepth is ignored because client certificates are not verified with clientAuth: %s; remove it, or give trustedCA", ClientAuthName(h.ClientAuth))
			}
		}
	}

	h.Revocation = c.configRevocation(o, clientPeer, h.ClientAuth)

	protocol := c.tlsProtocol(tlsParams{
		at:         at,
		minVersion: c.configVersion(o, fieldMinVersion),
		maxVersion: c.configVersion(o, fieldMaxVersion),
		ciphers:    listOf(o.stringList(fieldCiphers)),
		alpn:       listOf(o.stringList(fieldALPN)),
		peers:      "clients",
	})
	h.MinVersion, h.MaxVersion = protocol.minVersion, protocol.maxVersion
	h.CipherSuites, h.ALPN = protocol.cipherSuites, protocol.alpn
	h.Fingerprint = hostFingerprint(h)
	return out
}

// inboundClientAuth reads the client-auth mode: clientAuth when given (the
// Listener's names), else Flex's requireClientCertificate: true is
// require-and-verify, and otherwise a trustedCA verifies certificates that
// clients give (verify-if-given), so that routes can require them.
func (c *checker) inboundClientAuth(o configObject) tls.ClientAuthType {
	require, requireState := o.boolean(fieldRequireClientCertificate)
	name, nameState := o.str(fieldClientAuth)
	if nameState == present {
		if requireState == present {
			c.errorf(o.at.Child(fieldRequireClientCertificate), "give either requireClientCertificate (Flex's switch) or clientAuth (one of %s), not both", quoteList(clientAuthNames()))
		}
		for _, m := range clientAuthModes {
			if m.name == name {
				return m.mode
			}
		}
		msg := fmt.Sprintf("clientAuth %q is not supported; use one of %s", name, quoteList(clientAuthNames()))
		if s := DidYouMean(name, clientAuthNames()); s != "" {
			msg += fmt.Sprintf(": did you mean %q?", s)
		}
		c.errorf(o.at.Child(fieldClientAuth), "%s", msg)
		return tls.NoClientCert
	}
	switch {
	case requireState == present && require:
		return tls.RequireAndVerifyClientCert
	case o.value(fieldTrustedCA) != nil:
		return tls.VerifyClientCertIfGiven
	}
	return tls.NoClientCert
}

// inboundTrustedCA reads trustedCA: a PEM string, or {truststore: NAME}.
func (c *checker) inboundTrustedCA(o configObject) (pemText, truststore string, state presence) {
	v := o.value(fieldTrustedCA)
	if v == nil {
		return "", "", absent
	}
	if obj, ok := v.GetKind().(*structpb.Value_StructValue); ok {
		ref := configObject{c: c, at: o.at.Child(fieldTrustedCA), fields: obj.StructValue.GetFields()}
		ref.unknownKeys([]string{fieldTruststore}, "trustedCA (as a reference)")
		name, st := ref.str(fieldTruststore)
		if st == absent {
			c.errorf(ref.at.Child(fieldTruststore), "trustedCA as an object needs truststore: give trustedCA: {truststore: NAME} to use a truststore of the secrets service, or the CA PEM as a string")
			return "", "", invalid
		}
		if st != present {
			return "", "", invalid
		}
		return "", name, present
	}
	text, st := o.str(fieldTrustedCA)
	return text, "", st
}

func clientAuthNames() []string {
	names := make([]string, len(clientAuthModes))
	for i, m := range clientAuthModes {
		names[i] = m.name
	}
	return names
}

func itemValues(items []listItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.value
	}
	return out
}

// WithInbound returns the Listener as served: its own hosts, then the host
// of each tls-inbound binding that targets it, in binding-name order. A
// binding whose hostnames a host already serves, or that would be a second
// default, is left out and reported by name (validation refuses both; this
// covers bindings stored before the Listener changed). l is not modified.
func (l *Listener) WithInbound(bindings []*Binding) (*Listener, map[string]error) {
	var mine []*Binding
	for _, b := range bindings {
		if b != nil && b.Inbound != nil && b.Policy == PolicyTLSInbound && b.Target == (Ref{KindListener, l.Name}) {
			mine = append(mine, b)
		}
	}
	if len(mine) == 0 {
		return l, nil
	}
	slices.SortFunc(mine, func(a, b *Binding) int { return strings.Compare(a.Name, b.Name) })
	out := *l
	out.Hosts = slices.Clone(l.Hosts)
	served := make(map[string]string) // hostname → who serves it
	for _, h := range l.Hosts {
		for _, n := range h.Hostnames {
			served[n] = "the Listener's own hosts"
		}
	}
	defaultBy := ""
	if l.DefaultSet {
		defaultBy = "the Listener's own default host"
	}
	errs := make(map[string]error)
	for _, b := range mine {
		if err := inboundConflict(b, served, defaultBy); err != nil {
			errs[b.Name] = err
			continue
		}
		for _, n := range b.Inbound.Host.Hostnames {
			served[n] = fmt.Sprintf("tls-inbound binding %q", b.Name)
		}
		out.Hosts = append(out.Hosts, b.Inbound.Host)
		if b.Inbound.Default {
			defaultBy = fmt.Sprintf("tls-inbound binding %q", b.Name)
			out.Default, out.DefaultSet = len(out.Hosts)-1, true
		}
	}
	if out.Default < 0 && len(out.Hosts) > 0 {
		out.Default = 0
	}
	if len(errs) == 0 {
		errs = nil
	}
	return &out, errs
}

// inboundConflict says why b cannot join a Listener whose hostnames are
// served as served says and whose default host is defaultBy's ("" when it
// has none set).
func inboundConflict(b *Binding, served map[string]string, defaultBy string) error {
	for _, n := range b.Inbound.Host.Hostnames {
		if by, taken := served[n]; taken {
			return fmt.Errorf("hostname %q is already served by %s on Listener %q; each hostname is served by one host: remove it from one of them", n, by, b.Target.Name)
		}
	}
	if b.Inbound.Default && defaultBy != "" {
		return fmt.Errorf("Listener %q already has a default host (%s); a Listener has one: list hostnames in this binding, or remove default: true from the other", b.Target.Name, defaultBy)
	}
	return nil
}

// inboundHosts checks every Listener that the request changes, or that a
// tls-inbound binding of the request targets, as it would be served: its
// hosts and those of its bindings (stored ones the request does not
// replace, and the request's) serve each hostname once and name one default
// at most. A Listener left with no host at all gets a warning: nodes will
// not serve it until a binding gives it one.
func (c *checker) inboundHosts(entries []built, stored Catalog) {
	listeners := make(map[string]*Listener)
	listenerAt := make(map[string]fieldPath)
	for _, l := range stored.Listeners() {
		listeners[l.Name] = &l
	}
	bindings := make(map[string]*Binding)
	bindingAt := make(map[string]fieldPath)
	for _, b := range stored.Bindings() {
		if b.Policy == PolicyTLSInbound && b.Inbound != nil {
			bindings[b.Name] = &b
		}
	}
	touched := make(map[string]bool)
	for _, e := range entries {
		switch o := e.obj; {
		case o.Listener != nil && o.Listener.Name != "":
			listeners[o.Listener.Name], listenerAt[o.Listener.Name] = o.Listener, e.at
			touched[o.Listener.Name] = true
		case o.Binding != nil && o.Binding.Name != "":
			delete(bindings, o.Binding.Name) // replaced, perhaps by another policy
			if o.Binding.Policy == PolicyTLSInbound && o.Binding.Inbound != nil {
				bindings[o.Binding.Name], bindingAt[o.Binding.Name] = o.Binding, e.at
				touched[o.Binding.Target.Name] = true
			}
		}
	}
	all := slices.Collect(maps.Values(bindings))
	for name := range touched {
		l := listeners[name]
		if l == nil {
			continue // reported as a missing target
		}
		served, errs := l.WithInbound(all)
		for bname, err := range errs {
			if at, ok := bindingAt[bname]; ok {
				c.errorf(at.Child("spec").Child("config"), "%s", err)
			} else if at, ok := listenerAt[name]; ok {
				c.errorf(at.Child("spec").Child("hosts"), "%s (stored tls-inbound binding %q)", err, bname)
			}
		}
		if at, ok := listenerAt[name]; ok && len(served.Hosts) == 0 {
			c.warnf(at.Child("spec").Child("hosts"), "Listener %q has no hosts and no tls-inbound binding targets it, so proxy nodes will not serve it yet: add hosts, or apply a PolicyBinding with policyRef: {name: tls-inbound} and targetRef: {kind: Listener, name: %s}", name, name)
		}
	}
}
