package stack

import (
	"fmt"
	"os"
	"strings"
)

// writeSample writes the sample manifest the dev stack applies: a Service for
// the demo upstream, a Route to it, and a MuleSoft Flex Gateway tls-outbound
// PolicyBinding, written as Flex documents it, with the dev PKI's PEMs inline.
func writeSample(path, upstreamAddr, listenerAddr string, p *pki) error {
	read := func(name string) (string, error) {
		b, err := os.ReadFile(name)
		if err != nil {
			return "", err
		}
		return indent(string(b), "        "), nil
	}
	ca, err := read(p.caFile)
	if err != nil {
		return err
	}
	crt, err := read(p.gatewayCert)
	if err != nil {
		return err
	}
	key, err := read(p.gatewayKey)
	if err != nil {
		return err
	}
	serverCrt, err := read(p.serverCert)
	if err != nil {
		return err
	}
	serverKey, err := read(p.serverKey)
	if err != nil {
		return err
	}
	doc := fmt.Sprintf(`# The local stack's sample configuration, written by keyway-dev.
# The demo upstream at %[1]s accepts only clients with a certificate from the dev CA.
apiVersion: keyway.dev/v1alpha1
kind: Service
metadata:
  name: demo
spec:
  address: %[1]s
---
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: demo
spec:
  path: /demo/
  service: demo
---
# Over HTTPS, /admin/ needs a client certificate verified by the Listener
# (401 client_certificate_required without one) and admits only demo-client.
# It is served on Listener "public" only: never on the plain-HTTP port.
apiVersion: keyway.dev/v1alpha1
kind: Route
metadata:
  name: demo-admin
spec:
  path: /admin/
  service: demo
  clientCertificate: required
  allow:
    - cn: demo-client
  listeners: [public]
---
# A MuleSoft Flex Gateway tls-outbound binding, as Flex documents it.
apiVersion: gateway.mulesoft.com/v1alpha1
kind: PolicyBinding
metadata:
  name: demo-mtls
spec:
  targetRef:
    kind: Service
    name: demo
  policyRef:
    name: tls-outbound
  config:
    skipValidation: false
    trustedCA: |
%[2]s    certificate:
      key: |
%[3]s      crt: |
%[4]s    sni: %[5]s
    alpn: [h2, http/1.1]
    minversion: "1.2"
    maxversion: "1.3"
---
# HTTPS on the proxy: clients may present a certificate from the dev CA.
apiVersion: keyway.dev/v1alpha1
kind: Listener
metadata:
  name: public
spec:
  address: %[6]s
  hosts:
    - hostnames: [localhost, keyway.local]
      default: true
      certificate:
        crt: |
%[7]s        key: |
%[8]s      clientAuth: verify-if-given
      clientCAs: |
%[2]s`, upstreamAddr, ca, key, crt, UpstreamName, listenerAddr, indent(serverCrt, "  "), indent(serverKey, "  "))
	return os.WriteFile(path, []byte(doc), 0o600)
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line == "" {
			continue
		}
		b.WriteString(prefix)
		b.WriteString(line)
	}
	return b.String()
}
