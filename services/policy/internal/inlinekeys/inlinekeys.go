// Package inlinekeys keeps private keys out of NATS. A PolicyBinding or a
// Listener may carry a key pair inline (certificate: {crt, key}); at apply
// the policy service stores the pair in the secrets service, as an alias of
// the keystore [Keystore], and stores the resource with the reference
// certificate: {keystore, alias} in its place. The configuration bucket
// then holds names, never key material.
//
// Encrypting the key in place was the other choice; it was not taken
// because every proxy node would then hold the decryption key, a second
// place where keys rest (docs/design/secure-by-default.md).
package inlinekeys

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/model"
	"keyway.dev/internal/secretref"
)

// Keystore is the secrets service's keystore that holds the key pairs moved
// out of resources.
const Keystore = "keyway-inline"

// Fields of a certificate object, as the API spells them.
const (
	fieldCertificate = "certificate"
	fieldKey         = "key"
	fieldCrt         = "crt"
	fieldKeystore    = "keystore"
	fieldAlias       = "alias"
)

// Pair is one inline key pair of a resource.
type Pair struct {
	// Field is the path of the certificate object below resources[i], e.g.
	// "listener.spec.hosts[0].certificate".
	Field string
	// Crt is the certificate chain and Key the private key, PEM.
	Crt, Key string
	// Server is set for a server certificate (a Listener host, a
	// tls-inbound binding); a tls-outbound binding's is a client
	// certificate.
	Server bool

	replace func(ref secretref.Ref)
}

// KeyField is the path of the pair's key below resources[i].
func (p Pair) KeyField() string { return p.Field + "." + fieldKey }

// Replace puts ref in place of the inline pair in the resource Find read it
// from.
func (p Pair) Replace(ref secretref.Ref) { p.replace(ref) }

// Find lists the inline key pairs of r: a PolicyBinding's
// config.certificate {crt, key} and each Listener host's certificate. A pair
// counts when its key is given; validation has refused a key without its
// certificate. Redacted markers (what get answered before keys were moved)
// are keys too: the caller restores them first.
func Find(r *policyv1.Resource) []Pair {
	var out []Pair
	if b := r.GetPolicyBinding(); b != nil {
		cert := b.GetSpec().GetConfig().GetFields()[fieldCertificate].GetStructValue()
		if key := cert.GetFields()[fieldKey].GetStringValue(); key != "" {
			out = append(out, Pair{
				Field:  "policyBinding.spec.config." + fieldCertificate,
				Crt:    cert.GetFields()[fieldCrt].GetStringValue(),
				Key:    key,
				Server: b.GetSpec().GetPolicyRef().GetName() != model.PolicyTLSOutbound,
				replace: func(ref secretref.Ref) {
					delete(cert.Fields, fieldKey)
					delete(cert.Fields, fieldCrt)
					cert.Fields[fieldKeystore] = structpb.NewStringValue(ref.Keystore)
					cert.Fields[fieldAlias] = structpb.NewStringValue(ref.Alias)
				},
			})
		}
	}
	for j, h := range r.GetListener().GetSpec().GetHosts() {
		kp := h.GetCertificate()
		if kp.GetKey() == "" {
			continue
		}
		out = append(out, Pair{
			Field: fmt.Sprintf("listener.spec.hosts[%d].%s", j, fieldCertificate),
			Crt:   kp.GetCrt(), Key: kp.GetKey(), Server: true,
			replace: func(ref secretref.Ref) {
				kp.Crt, kp.Key = "", ""
				kp.Keystore, kp.Alias = ref.Keystore, ref.Alias
			},
		})
	}
	return out
}

// Moved is one reference of r to the keystore [Keystore], and where it is.
type Moved struct {
	Field string
	Ref   secretref.Ref
}

// Refs lists r's references to aliases of [Keystore]: the pairs moved out
// of it at earlier applies.
func Refs(r *policyv1.Resource) []Moved {
	var out []Moved
	if b := r.GetPolicyBinding(); b != nil {
		f := b.GetSpec().GetConfig().GetFields()[fieldCertificate].GetStructValue().GetFields()
		if f[fieldKeystore].GetStringValue() == Keystore && f[fieldAlias].GetStringValue() != "" {
			out = append(out, Moved{Field: "policyBinding.spec.config." + fieldCertificate,
				Ref: secretref.Ref{Keystore: Keystore, Alias: f[fieldAlias].GetStringValue()}})
		}
	}
	for j, h := range r.GetListener().GetSpec().GetHosts() {
		if kp := h.GetCertificate(); kp.GetKeystore() == Keystore && kp.GetAlias() != "" {
			out = append(out, Moved{Field: fmt.Sprintf("listener.spec.hosts[%d].%s", j, fieldCertificate),
				Ref: secretref.Ref{Keystore: Keystore, Alias: kp.GetAlias()}})
		}
	}
	return out
}

// Alias names, within the secrets service's rules (letters, digits, hyphens
// and underscores, at most 64 characters): "<kind>-<name>-<fingerprint>".
const (
	maxAliasLen = 64
	fpLen       = 12
	// maxNamePart leaves room for "lst-", "-" and the fingerprint.
	maxNamePart = maxAliasLen - 4 - 1 - fpLen
)

// kindPrefix shortens a kind for alias names.
func kindPrefix(kind string) string {
	switch kind {
	case model.KindListener:
		return "lst"
	case model.KindPolicyBinding:
		return "pb"
	}
	return strings.ToLower(kind)
}

// AliasName names the alias of a pair of resource kind/name: the kind, the
// resource's name and the first 12 hex digits of the SHA-256 of the leaf's
// public key (SubjectPublicKeyInfo): the key's fingerprint, which gives away
// nothing of the key. The same key under the same resource always gets the
// same alias, so re-applying a manifest rewrites nothing; a new key gets a
// new alias. A name too long to fit keeps its head and a digest of the
// whole, so that two resources never share an alias.
func AliasName(kind, name string, spki []byte) string {
	sum := sha256.Sum256(spki)
	return aliasName(kind, name, hex.EncodeToString(sum[:])[:fpLen])
}

func aliasName(kind, name, fp string) string {
	if len(name) > maxNamePart {
		d := sha256.Sum256([]byte(name))
		name = name[:maxNamePart-9] + "-" + hex.EncodeToString(d[:])[:8]
	}
	a := kindPrefix(kind) + "-" + name + "-" + fp
	// Resource names are lowercase letters, digits and hyphens, which the
	// secrets service accepts; anything else becomes a hyphen.
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, a)
}

// Chain parses a pair's certificate chain: the leaf first.
func Chain(crtPEM string) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	rest := []byte(crtPEM)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("inlinekeys: parsing certificate %d of the chain: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("inlinekeys: no certificate in crt")
	}
	return chain, nil
}

// Plan names the alias of every pair of one resource. Two pairs with the
// same key and chain share an alias; two with the same key and different
// chains (a rare Listener) get aliases named for their chains instead.
func Plan(kind, name string, pairs []Pair) ([]secretref.Ref, error) {
	refs := make([]secretref.Ref, len(pairs))
	byAlias := map[string]string{} // alias → crt
	for i, p := range pairs {
		chain, err := Chain(p.Crt)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Field, err)
		}
		alias := AliasName(kind, name, chain[0].RawSubjectPublicKeyInfo)
		if crt, taken := byAlias[alias]; taken && crt != p.Crt {
			sum := sha256.New()
			sum.Write(chain[0].RawSubjectPublicKeyInfo)
			for _, c := range chain {
				sum.Write(c.Raw)
			}
			alias = aliasName(kind, name, hex.EncodeToString(sum.Sum(nil))[:fpLen])
		}
		if err := secretref.CheckName(alias); err != nil {
			return nil, fmt.Errorf("inlinekeys: alias for %s: %w", p.Field, err)
		}
		byAlias[alias] = p.Crt
		refs[i] = secretref.Ref{Keystore: Keystore, Alias: alias}
	}
	return refs, nil
}
