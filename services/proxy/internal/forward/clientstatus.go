package forward

import (
	"net/http"

	"keyway.dev/internal/failure"
)

// clientStatus is the status of a request refused for its client
// certificate: [StatusCode]'s, except for the reasons a client shares with
// upstreams, revoked and revocation_unknown, which are 401 here as every
// other refusal of a client certificate (and 502 for an upstream).
func clientStatus(r failure.Reason) int {
	switch r {
	case failure.Revoked, failure.RevocationUnknown:
		return http.StatusUnauthorized
	}
	return StatusCode(r)
}
