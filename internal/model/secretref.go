package model

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/secretref"
)

// errNoSecrets is what a reference meets when no secrets service is
// configured.
var errNoSecrets = errors.New("no secrets service is configured")

// Fields of references, spelled as in the API.
const (
	fieldKeystore         = "keystore"
	fieldAlias            = "alias"
	fieldTruststore       = "truststore"
	fieldClientTruststore = "clientTruststore"
)

// refCheck is one reference found while building objects, checked against
// the secrets service once the whole request is built.
type refCheck struct {
	at fieldPath
	// alias is set for a key pair; truststore otherwise.
	alias      *secretref.Ref
	truststore string
	role       keyPairRole
	// hostnames (server key pairs only) must be covered by the leaf's DNS
	// SANs; hostnamesAt is their path.
	hostnames   []listItem
	hostnamesAt fieldPath
}

// SecretUse is one reference of a resource to the secrets service.
type SecretUse struct {
	// Field is where the reference is, below the resource
	// ("policyBinding.spec.config.certificate").
	Field string
	// Alias is set for a key pair; Truststore otherwise.
	Alias      *secretref.Ref
	Truststore string
}

// SecretUses lists the references of one stored resource to the secrets
// service: every alias and truststore a proxy node would resolve for it. It
// parses as [Decode] does; a resource that breaks other rules still
// reports the references it names, so that a caller deciding whether a
// secret is in use errs on the side of "in use".
func SecretUses(res *policyv1.Resource) []SecretUse {
	c := &checker{decode: true}
	c.resource("", res)
	out := make([]SecretUse, 0, len(c.refs))
	for _, r := range c.refs {
		out = append(out, SecretUse{Field: string(r.at), Alias: r.alias, Truststore: r.truststore})
	}
	return out
}

// aliasRef reads {keystore, alias} at at (the path of the object holding
// them) and records it for checking; it returns nil when the names are
// invalid (already reported).
func (c *checker) aliasRef(at fieldPath, keystore, alias string, role keyPairRole) *secretref.Ref {
	ok := true
	if p := secretref.NameProblem(fieldKeystore, keystore); p != "" {
		c.errorf(at.Child(fieldKeystore), "%s", p)
		ok = false
	}
	if p := secretref.NameProblem(fieldAlias, alias); p != "" {
		c.errorf(at.Child(fieldAlias), "%s", p)
		ok = false
	}
	if !ok {
		return nil
	}
	ref := &secretref.Ref{Keystore: keystore, Alias: alias}
	c.refs = append(c.refs, refCheck{at: at, alias: ref, role: role})
	return ref
}

// truststoreRef checks a truststore name at at and records it for
// checking; it returns "" when the name is invalid (already reported).
func (c *checker) truststoreRef(at fieldPath, name string) string {
	if p := secretref.NameProblem(fieldTruststore, name); p != "" {
		c.errorf(at, "%s", p)
		return ""
	}
	c.refs = append(c.refs, refCheck{at: at, truststore: name})
	return name
}

// checkRefs asks the secrets service about every reference recorded, each
// once, and reports what is wrong at the field that holds it.
func (c *checker) checkRefs(ctx context.Context, secrets secretref.Secrets) {
	if c.decode || len(c.refs) == 0 {
		return
	}
	type aliasAnswer struct {
		info secretref.AliasInfo
		err  error
	}
	type storeAnswer struct {
		info secretref.TruststoreInfo
		err  error
	}
	aliases := make(map[secretref.Ref]aliasAnswer)
	stores := make(map[string]storeAnswer)
	for _, r := range c.refs {
		switch {
		case r.alias != nil:
			a, seen := aliases[*r.alias]
			if !seen {
				if secrets == nil {
					a.err = errNoSecrets
				} else {
					a.info, a.err = secrets.Alias(ctx, r.alias.Keystore, r.alias.Alias)
				}
				aliases[*r.alias] = a
			}
			c.checkAlias(r, a.info, a.err)
		default:
			s, seen := stores[r.truststore]
			if !seen {
				if secrets == nil {
					s.err = errNoSecrets
				} else {
					s.info, s.err = secrets.Truststore(ctx, r.truststore)
				}
				stores[r.truststore] = s
			}
			c.checkTruststore(r, s.info, s.err)
		}
	}
}

// putAliasCommand is the keywayctl command that stores a key pair under
// keystore/alias. Fixes name the command, not the RPC behind it
// (SecretsService.PutAlias): keywayctl is how people store key pairs, and
// API clients find the RPC for each command in the keywayctl reference.
// The names are safe to paste: references are checked to be letters,
// digits, hyphens and underscores before they are looked up.
func putAliasCommand(keystore, alias string, role keyPairRole) string {
	usage := ""
	if role.name == serverRole.name {
		usage = " --usage server"
	}
	return fmt.Sprintf("`keywayctl secrets put --keystore %s --alias %s --cert CERT.pem --key KEY.pem%s`", keystore, alias, usage)
}

// unreachable reports a reference that could not be checked.
func (c *checker) unreachable(at fieldPath, what string, err error) {
	if errors.Is(err, errNoSecrets) {
		c.errorf(at, "%s refers to the secrets service, but this policy service has no secrets service configured; start keyway-policy with --secrets-server (KEYWAY_SECRETS_SERVER), or give the PEM inline", what)
		return
	}
	c.errorf(at, "%s cannot be checked: the secrets service did not answer (%v); nothing was applied: apply again once it is reachable", what, err)
}

func (c *checker) checkAlias(r refCheck, info secretref.AliasInfo, err error) {
	ks, al := r.alias.Keystore, r.alias.Alias
	subject := fmt.Sprintf("keystore %q alias %q", ks, al)
	if err != nil {
		var nf *secretref.NotFoundError
		switch {
		case errors.As(err, &nf) && nf.Kind == fieldKeystore:
			c.errorf(r.at.Child(fieldKeystore), "keystore %q does not exist in the secrets service%s; create it by storing the key pair in it (%s), or fix the name", ks, known("keystores", ks, nf.Known), putAliasCommand(ks, al, r.role))
		case errors.As(err, &nf):
			c.errorf(r.at.Child(fieldAlias), "alias %q does not exist in keystore %q%s; store the key pair under that alias (%s), or fix the name", al, ks, known("aliases there", al, nf.Known), putAliasCommand(ks, al, r.role))
		default:
			c.unreachable(r.at, subject, err)
		}
		return
	}
	if len(info.Chain) == 0 {
		if info.Rejected != "" {
			c.errorf(r.at, "%s has no version the secrets service serves: %s; store a good certificate chain and key under it", subject, info.Rejected)
			return
		}
		c.errorf(r.at, "%s holds no certificate; store the certificate chain and key under it again", subject)
		return
	}
	if info.Rejected != "" {
		c.warnf(r.at, "%s: %s; version %s is served until a good version is stored", subject, info.Rejected, info.Version)
	}
	crtAt := r.at.Child(fieldAlias)
	for _, cert := range info.Chain {
		c.report.Certificates = append(c.report.Certificates, CertificateInfo{
			Field: string(crtAt), Summary: &cert, Fingerprint: cert.Fingerprint, NotAfter: cert.NotAfter,
			Reference: r.alias.String(), Version: info.Version,
		})
	}
	leaf := info.Chain[0]
	if bits, isRSA := rsaBits(leaf.KeyType); isRSA && bits < minRSABits {
		c.errorf(crtAt, "%s: the RSA key is %d bits; keys must be at least %d bits: store a new key pair under the alias (`openssl genrsa -out key.pem 2048`, or an ECDSA key) with its certificate reissued", subject, bits, minRSABits)
	}
	for i, cert := range info.Chain {
		p := cert.ValidityProblem(c.now)
		if p == "" {
			continue
		}
		what := "the " + r.role.name + " certificate"
		if i > 0 {
			what = fmt.Sprintf("intermediate certificate %d", i+1)
		}
		fix := "store a renewed certificate under the alias"
		if c.now.Before(cert.NotBefore) {
			fix = "apply once it is valid, or have it reissued starting now"
		}
		c.errorf(crtAt, "%s: %s (%s) %s; %s", subject, what, quoteSubject(cert.Subject), p, fix)
	}
	if r.role.name != serverRole.name {
		return
	}
	if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
		covered := true
		for _, it := range r.hostnames {
			covered = covered && leaf.CommonNameCovers(it.value)
		}
		if !covered {
			c.errorf(crtAt, "%s: the server certificate (%s) has no subject alternative name and its Common Name does not cover the hostnames, so clients will refuse it; reissue it with -addext \"subjectAltName=DNS:<hostname>\" (signed with openssl x509 -req … -copy_extensions copy, without which OpenSSL 3 drops the SAN) and store it under the alias", subject, quoteSubject(leaf.Subject))
			return
		}
		c.warnf(crtAt, "%s: the server certificate (%s) has no subjectAltName, only a Common Name: curl and other OpenSSL-based clients accept it, but browsers and Go clients refuse it; reissue it with -addext \"subjectAltName=DNS:<hostname>\" (signed with openssl x509 -req … -copy_extensions copy) and store it under the alias", subject, quoteSubject(leaf.Subject))
		return
	}
	for _, it := range r.hostnames {
		if sanCovers(leaf.DNSNames, it.value) {
			continue
		}
		c.errorf(r.hostnamesAt.Index(it.index), "hostname %q is not covered by the server certificate of %s (its DNS SANs are %s), so clients will refuse the connection; store a certificate with a SAN for it under the alias, or move the hostname to a host whose certificate covers it", it.value, subject, strings.Join(leaf.DNSNames, ", "))
	}
}

func (c *checker) checkTruststore(r refCheck, info secretref.TruststoreInfo, err error) {
	subject := fmt.Sprintf("truststore %q", r.truststore)
	if err != nil {
		var nf *secretref.NotFoundError
		if errors.As(err, &nf) {
			c.errorf(r.at, "truststore %q does not exist in the secrets service%s; store the CA bundle under that name (`keywayctl secrets put --truststore %s --cert CA.pem`), or fix the name", r.truststore, known("truststores", r.truststore, nf.Known), r.truststore)
			return
		}
		c.unreachable(r.at, subject, err)
		return
	}
	if len(info.Certificates) == 0 {
		if info.Rejected != "" {
			c.errorf(r.at, "%s has no version the secrets service serves: %s; store a good CA bundle under it", subject, info.Rejected)
			return
		}
		c.errorf(r.at, "%s holds no certificate; store the CA bundle under it again", subject)
		return
	}
	if info.Rejected != "" {
		c.warnf(r.at, "%s: %s; version %s is served until a good version is stored", subject, info.Rejected, info.Version)
	}
	var outside []int
	for i, cert := range info.Certificates {
		c.report.Certificates = append(c.report.Certificates, CertificateInfo{
			Field: string(r.at), Summary: &cert, Fingerprint: cert.Fingerprint, NotAfter: cert.NotAfter,
			Reference: secretref.Ref{Truststore: r.truststore}.String(), Version: info.Version,
		})
		if !cert.IsCA && cert.V1Root {
			c.warnf(r.at, "%s certificate %d (%s) is an X.509 v1 root: it has no basicConstraints, and it is accepted as a trust anchor (as OpenSSL and Go accept self-signed v1 roots) that verifies every certificate it signed, never as an intermediate; `keywayctl secrets get` gives the openssl command that makes it a v3 CA", subject, i+1, quoteSubject(cert.Subject))
		} else if !cert.IsCA {
			c.warnf(r.at, "%s certificate %d (%s) is not a CA certificate, so it only matches a peer presenting exactly this certificate; store the issuing CA instead", subject, i+1, quoteSubject(cert.Subject))
		}
		if cert.ValidityProblem(c.now) != "" {
			outside = append(outside, i)
		}
	}
	for _, i := range outside {
		cert := info.Certificates[i]
		if len(outside) == len(info.Certificates) {
			c.errorf(r.at, "%s certificate %d (%s) %s, and no certificate of the truststore is valid now, so no peer can be verified with it; store the CA's current certificate", subject, i+1, quoteSubject(cert.Subject), cert.ValidityProblem(c.now))
		} else {
			c.warnf(r.at, "%s certificate %d (%s) %s; peers whose certificates chain only to it will be refused: remove it once the rotation is over", subject, i+1, quoteSubject(cert.Subject), cert.ValidityProblem(c.now))
		}
	}
}

// known formats the names that exist, with a suggestion, for a not-found
// message: ` (did you mean "edge"? keystores: "edge", "internal")`.
func known(what, name string, names []string) string {
	if len(names) == 0 {
		return ""
	}
	names = slices.Sorted(slices.Values(names))
	s := ""
	if m := DidYouMean(name, names); m != "" {
		s = fmt.Sprintf("did you mean %q? ", m)
	}
	const most = 10
	list := names
	more := ""
	if len(list) > most {
		list, more = list[:most], fmt.Sprintf(" and %d more", len(names)-most)
	}
	return fmt.Sprintf(" (%s%s: %s%s)", s, what, quoteList(list), more)
}

// rsaBits reads the size of an RSA key from a key type ("RSA 2048").
func rsaBits(keyType string) (int, bool) {
	rest, ok := strings.CutPrefix(keyType, "RSA ")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(rest))
	return n, err == nil
}

func quoteSubject(s string) string { return fmt.Sprintf("%q", s) }

// Resolve returns a copy of o with the material its references stand for:
// cert for its certificate reference, cas for its truststore (nil for what
// o does not reference). The fingerprint covers the references and the
// material, so that a rotated alias gets a new pool. A proxy node calls it
// with what the secrets service handed it.
func (o *OutboundTLS) Resolve(cert *tls.Certificate, cas []*x509.Certificate) *OutboundTLS {
	out := *o
	if o.CertificateRef != nil {
		out.Certificate = cert
	}
	if o.Truststore != "" {
		out.TrustedCAs = cas
	}
	out.Fingerprint = fingerprint(&out)
	return &out
}

// References reports whether o refers to the secrets service.
func (o *OutboundTLS) References() bool {
	return o.CertificateRef != nil || o.Truststore != ""
}

// Resolve returns a copy of h with the material its references stand for,
// as [OutboundTLS.Resolve] does.
func (h ListenerHost) Resolve(cert *tls.Certificate, cas []*x509.Certificate) ListenerHost {
	if h.CertificateRef != nil {
		h.Certificate = cert
	}
	if h.ClientTruststore != "" {
		h.ClientCAs = cas
	}
	h.Fingerprint = hostFingerprint(&h)
	return h
}

// References reports whether h refers to the secrets service.
func (h *ListenerHost) References() bool {
	return h.CertificateRef != nil || h.ClientTruststore != ""
}
