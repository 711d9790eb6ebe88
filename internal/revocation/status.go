package revocation

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mode says what a [Checker] does with a certificate whose status is
// unknown. A revoked certificate is refused in every mode but [Off].
type Mode string

// Modes, spelled as in configuration.
const (
	// Off checks nothing: every certificate is allowed.
	Off Mode = "off"
	// SoftFail allows a certificate whose status is unknown, and reports
	// it ([Status.Result] is [Unknown]); a revoked certificate is refused.
	SoftFail Mode = "soft-fail"
	// HardFail refuses a certificate whose status is unknown: only a
	// certificate that a current list or response covers is allowed.
	HardFail Mode = "hard-fail"
)

// Modes lists the modes, in the order messages name them.
func Modes() []Mode { return []Mode{Off, SoftFail, HardFail} }

// ParseMode reads a mode by its name; "" is [Off].
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return Off, nil
	case Off, SoftFail, HardFail:
		return m, nil
	}
	return "", fmt.Errorf("revocation: mode %q is not one of off, soft-fail, hard-fail", s)
}

// Result is the outcome of a check.
type Result uint8

// Results.
const (
	// Unknown: no current list or response covers the certificate.
	Unknown Result = iota
	// Good: a current list or response covers the certificate and does
	// not revoke it.
	Good
	// Revoked: a list or response revokes the certificate.
	Revoked
)

// String names the result as metrics and logs spell it.
func (r Result) String() string {
	switch r {
	case Good:
		return "good"
	case Revoked:
		return "revoked"
	}
	return "unknown"
}

// ReasonCode is a CRL entry's or OCSP response's reason for a revocation
// (RFC 5280 section 5.3.1).
type ReasonCode int

// Reason codes.
const (
	Unspecified          ReasonCode = 0
	KeyCompromise        ReasonCode = 1
	CACompromise         ReasonCode = 2
	AffiliationChanged   ReasonCode = 3
	Superseded           ReasonCode = 4
	CessationOfOperation ReasonCode = 5
	CertificateHold      ReasonCode = 6
	RemoveFromCRL        ReasonCode = 8
	PrivilegeWithdrawn   ReasonCode = 9
	AACompromise         ReasonCode = 10
)

var reasonNames = map[ReasonCode]string{
	Unspecified:          "unspecified",
	KeyCompromise:        "keyCompromise",
	CACompromise:         "cACompromise",
	AffiliationChanged:   "affiliationChanged",
	Superseded:           "superseded",
	CessationOfOperation: "cessationOfOperation",
	CertificateHold:      "certificateHold",
	RemoveFromCRL:        "removeFromCRL",
	PrivilegeWithdrawn:   "privilegeWithdrawn",
	AACompromise:         "aACompromise",
}

// String is the code's name in RFC 5280 ("keyCompromise").
func (c ReasonCode) String() string {
	if n, ok := reasonNames[c]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", int(c))
}

// Status is what is known of one certificate's revocation. The zero value
// is unknown, with no reason given.
type Status struct {
	Result Result
	// Reason and RevokedAt describe a revocation; zero otherwise.
	Reason    ReasonCode
	RevokedAt time.Time
	// Source is where the answer came from: the CRL's URL or file, or
	// "ocsp <responder URL>". For an unknown status, the first source
	// that was consulted, if any.
	Source string
	// Why says, for an unknown status, why nothing current covers the
	// certificate. Empty otherwise.
	Why string
	// Pending is set on an unknown status when a source it depends on has
	// not been tried yet (a CRL not fetched yet, an OCSP response not asked
	// yet): [Checker.Await] waits for it.
	Pending bool
	// Until is, for a good status, when the list or response that makes
	// it good stops being current (see [Cache.Generation]).
	Until time.Time
}

// Errors that [Checker.Verify] and [Status.Err] wrap, for errors.Is.
var (
	// ErrRevoked is a certificate that its CA revoked.
	ErrRevoked = errors.New("revocation: certificate revoked")
	// ErrUnknown is a certificate whose revocation status is unknown.
	ErrUnknown = errors.New("revocation: certificate revocation status unknown")
)

// Err is the status as an error: nil when good, else an *[Error] that
// wraps [ErrRevoked] or [ErrUnknown]. Mode does not apply: see
// [Checker.Verify].
func (s Status) Err() error {
	if s.Result == Good {
		return nil
	}
	return &Error{Status: s}
}

// Error is a certificate refused for its revocation status.
type Error struct {
	Status Status
	// Subject and Serial name the certificate, when known.
	Subject string
	Serial  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("revocation: certificate")
	if e.Subject != "" {
		fmt.Fprintf(&b, " %q", e.Subject)
	}
	if e.Serial != "" {
		fmt.Fprintf(&b, " (serial %s)", e.Serial)
	}
	s := e.Status
	switch s.Result {
	case Revoked:
		fmt.Fprintf(&b, " is revoked (%s) since %s", s.Reason, s.RevokedAt.UTC().Format(time.RFC3339))
		if s.Source != "" {
			fmt.Fprintf(&b, " by %s", s.Source)
		}
	default:
		b.WriteString(" has an unknown revocation status")
		if s.Why != "" {
			b.WriteString(": ")
			b.WriteString(s.Why)
		}
		if s.Source != "" && !strings.Contains(s.Why, strings.TrimPrefix(s.Source, "ocsp ")) {
			fmt.Fprintf(&b, " (%s)", s.Source)
		}
	}
	return b.String()
}

// Unwrap is [ErrRevoked] or [ErrUnknown].
func (e *Error) Unwrap() error {
	if e.Status.Result == Revoked {
		return ErrRevoked
	}
	return ErrUnknown
}
