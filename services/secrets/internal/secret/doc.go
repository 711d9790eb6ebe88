// Package secret holds the secrets service's records — aliases (a
// certificate chain and its key, or a binding to a Vault PKI role) and
// truststores (CA bundles) — the [PrivateKey] type that never prints its
// bytes, and the description of certificates with their expiry status.
package secret
