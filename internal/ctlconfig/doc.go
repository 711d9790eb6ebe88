// Package ctlconfig is keywayctl's configuration file: named contexts, each
// saying where the policy and secrets services are and how to authenticate
// to them (a client certificate, or a bearer token), and which context is
// current, as kubectl's kubeconfig does.
//
// The file is YAML, read from $KEYWAYCONFIG or ~/.config/keyway/config.yaml:
//
//	currentContext: keyway-dev
//	contexts:
//	  - name: keyway-dev
//	    server: https://127.0.0.1:8081
//	    secretsServer: https://127.0.0.1:8082
//	    ca: /abs/.keyway/pki/api-ca.crt
//	    cert: /abs/.keyway/pki/operator.crt
//	    key: /abs/.keyway/pki/operator.key
//
// [Load] bounds the file's size before parsing it and validates it, naming
// the field (contexts[1].server) and the fix of each problem. [Save] writes
// atomically with mode 0600, since a context may hold a token; [Update] and
// [Upsert] do a locked read-modify-write, so that keywayctl and the dev
// launcher (which writes its context as kind writes kubeconfig) do not lose
// each other's changes.
//
// keywayctl and the dev launcher (a module of its own) both import it, which
// is why it lives here and not in keywayctl's internal tree.
package ctlconfig
