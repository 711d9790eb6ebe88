// Package certs reads and describes X.509 certificates and keys for people:
// PEM parsing whose errors say how to produce a good file, the fingerprint
// every Keyway API, log, metric and header shows, the summary the secrets
// service answers with instead of DER, and the warnings about certificates
// that some clients accept and others refuse (X.509 v1 roots, server
// certificates with only a Common Name).
//
// It knows nothing of resources or secrets: the policy model, the secrets
// service and keywayctl all judge certificates with it, so a certificate is
// described the same way wherever it is shown.
package certs
