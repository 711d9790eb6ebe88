package failure

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"syscall"
	"time"
)

// Phase is how far a connection attempt to an upstream got when it failed.
type Phase uint8

// Phases of an upstream request.
const (
	// PhaseDial is name resolution and the TCP connection.
	PhaseDial Phase = iota
	// PhaseHandshake is the TLS handshake.
	PhaseHandshake
	// PhaseRequest is after the handshake: writing the request and reading
	// the response on an established connection. TLS 1.3 servers report a
	// refused client certificate here, on the first read.
	PhaseRequest
)

func (p Phase) String() string {
	switch p {
	case PhaseDial:
		return "dial"
	case PhaseHandshake:
		return "handshake"
	case PhaseRequest:
		return "request"
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// HandshakeFacts is what the dialer saw of one connection attempt. TLS
// reports several distinct failures with the same alert; the facts tell them
// apart.
type HandshakeFacts struct {
	Phase Phase
	// ServerName is the name the upstream's certificate is verified against
	// (the SNI, or the endpoint's host).
	ServerName string
	// ServerCertificateSeen is set once the upstream's certificate reached
	// verification (VerifyConnection ran).
	ServerCertificateSeen bool
	// ClientCertificateRequested is set when the upstream asked for a client
	// certificate (GetClientCertificate ran).
	ClientCertificateRequested bool
	// ClientCertificateSent is set when a client certificate was presented.
	// In PhaseRequest it says whether one is configured, since the
	// connection that failed is not known.
	ClientCertificateSent bool
}

// Reasoner is implemented by errors that already know their reason; the
// classification of a wrapped Reasoner is kept.
type Reasoner interface {
	FailureReason() Reason
}

// WithReason attaches a reason to an error, for failures found by Keyway's
// own checks (e.g. a subjectAltNames constraint in VerifyConnection).
func WithReason(r Reason, err error) error { return &reasonError{r, err} }

type reasonError struct {
	reason Reason
	err    error
}

func (e *reasonError) Error() string         { return e.err.Error() }
func (e *reasonError) Unwrap() error         { return e.err }
func (e *reasonError) FailureReason() Reason { return e.reason }

// Diagnosis is a classified failure: the reason and a detail for logs and
// the 502 body. The detail never holds key material.
type Diagnosis struct {
	Reason Reason
	// Detail says what exactly happened, and for some reasons the exact fix
	// (the openssl command for legacy_common_name).
	Detail string
}

// Classify names the reason for err, an error from dialing, handshaking
// with or sending a request to an upstream.
func Classify(err error, hs HandshakeFacts) Reason { return Diagnose(err, hs).Reason }

// Diagnose is [Classify] with a detail.
func Diagnose(err error, hs HandshakeFacts) Diagnosis {
	if err == nil {
		return Diagnosis{Reason: Unknown}
	}
	d := diagnose(err, hs)
	if d.Detail == "" {
		d.Detail = err.Error()
	}
	return d
}

func diagnose(err error, hs HandshakeFacts) Diagnosis {
	var r Reasoner
	if errors.As(err, &r) {
		return Diagnosis{Reason: r.FailureReason()}
	}
	if d, ok := certificateFailure(err); ok {
		return d
	}
	if errors.Is(err, context.Canceled) {
		return Diagnosis{Reason: ClientCanceled}
	}
	if dns, ok := errors.AsType[*net.DNSError](err); ok {
		return Diagnosis{Reason: DNSFailure, Detail: fmt.Sprintf("resolving %q: %s", dns.Name, dns.Err)}
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		switch hs.Phase {
		case PhaseDial:
			return Diagnosis{Reason: DialTimeout}
		case PhaseHandshake:
			return Diagnosis{Reason: HandshakeTimeout, Detail: "no TLS handshake completed: " + hs.summary() + ": " + err.Error()}
		}
		return Diagnosis{Reason: UpstreamTimeout}
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return Diagnosis{Reason: ConnectionRefused}
	}
	if errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return Diagnosis{Reason: HostUnreachable}
	}
	if code, ok := AlertCode(err); ok {
		return alertFailure(code, err, hs)
	}
	if rh, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		detail := "the upstream's first bytes are not a TLS record"
		if strings.HasPrefix(string(rh.RecordHeader[:]), "HTTP/") {
			detail = "the upstream answered in plain HTTP"
		}
		return Diagnosis{Reason: NotTLS, Detail: detail + ": " + err.Error()}
	}
	// Failures the Go TLS client detects itself, which it reports as plain
	// errors (after sending the matching alert).
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unsupported protocol version"), strings.Contains(msg, "server selected TLS 1.3 using the legacy version field"):
		return Diagnosis{Reason: ProtocolVersion}
	case strings.Contains(msg, "unconfigured cipher suite"), strings.Contains(msg, "no cipher suite supported"):
		return Diagnosis{Reason: NoSharedCipher}
	case strings.Contains(msg, "unadvertised ALPN protocol"):
		return Diagnosis{Reason: NoApplicationProtocol}
	}
	if isReset(err) {
		if hs.Phase == PhaseHandshake && hs.ClientCertificateRequested && !hs.ClientCertificateSent {
			return Diagnosis{Reason: NoClientCertificate, Detail: "the upstream asked for a client certificate, none was sent, and it closed the connection: " + err.Error()}
		}
		return Diagnosis{Reason: UpstreamReset}
	}
	if hs.Phase == PhaseHandshake {
		return Diagnosis{Reason: HandshakeFailure, Detail: hs.summary() + ": " + err.Error()}
	}
	return Diagnosis{Reason: Unknown}
}

// certificateFailure classifies our verification of the upstream's
// certificate.
func certificateFailure(err error) (Diagnosis, bool) {
	if he, ok := errors.AsType[x509.HostnameError](err); ok {
		if legacyCommonName(he.Certificate) {
			return Diagnosis{Reason: LegacyCommonName, Detail: legacyFix(he.Certificate, he.Host)}, true
		}
		return Diagnosis{Reason: SANMismatch, Detail: fmt.Sprintf("the upstream's certificate %q is valid for %s, not for %q",
			he.Certificate.Subject.String(), sanList(he.Certificate), he.Host)}, true
	}
	if ie, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		c := ie.Cert
		switch ie.Reason {
		case x509.Expired:
			now := time.Now()
			if c != nil && now.Before(c.NotBefore) {
				return Diagnosis{Reason: NotYetValid, Detail: fmt.Sprintf("certificate %q is valid from %s (now %s)",
					c.Subject.String(), c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}, true
			}
			if c != nil {
				return Diagnosis{Reason: Expired, Detail: fmt.Sprintf("certificate %q expired at %s",
					c.Subject.String(), c.NotAfter.UTC().Format(time.RFC3339))}, true
			}
			return Diagnosis{Reason: Expired}, true
		case x509.NameConstraintsWithoutSANs:
			if c != nil {
				return Diagnosis{Reason: LegacyCommonName, Detail: legacyFix(c, c.Subject.CommonName)}, true
			}
		}
		return Diagnosis{Reason: InvalidCertificate}, true
	}
	if ue, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		if c := ue.Cert; c != nil {
			return Diagnosis{Reason: UnknownAuthority, Detail: fmt.Sprintf("certificate %q issued by %q is not signed by a trusted CA (trustedCA holds the issuer, and the upstream sends its intermediates?)",
				c.Subject.String(), c.Issuer.String())}, true
		}
		return Diagnosis{Reason: UnknownAuthority}, true
	}
	if _, ok := errors.AsType[x509.SystemRootsError](err); ok {
		return Diagnosis{Reason: UnknownAuthority}, true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return Diagnosis{Reason: InvalidCertificate}, true
	}
	return Diagnosis{}, false
}

// legacyCommonName reports whether c names its subject only in the Common
// Name, as `openssl req -subj /CN=…` without -addext makes it.
func legacyCommonName(c *x509.Certificate) bool {
	return c != nil && c.Subject.CommonName != "" &&
		len(c.DNSNames) == 0 && len(c.IPAddresses) == 0 && len(c.URIs) == 0 && len(c.EmailAddresses) == 0
}

// UnexpandedVariable says what happened when a certificate's Common Name
// is a shell variable as written, such as "${SERVER_HOST}": an openssl
// command that quoted -subj in single quotes ('/CN=${SERVER_HOST}', as
// Apigee's mTLS guide does), where the shell expands nothing. It returns ""
// for any other name.
func UnexpandedVariable(cn string) string {
	if !strings.Contains(cn, "$") {
		return ""
	}
	return fmt.Sprintf(" Its Common Name %q is a shell variable that was never expanded: the openssl command that made it quoted -subj in single quotes, "+
		"where the shell replaces nothing; reissue it with the host name written out, or in double quotes (-subj \"/CN=${SERVER_HOST}\" with SERVER_HOST set).", limitName(cn))
}

// limitName bounds a name taken from a certificate for a message.
func limitName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func legacyFix(c *x509.Certificate, host string) string {
	if host == "" {
		host = c.Subject.CommonName
	}
	san := "DNS:" + host
	if net.ParseIP(host) != nil {
		san = "IP:" + host
	}
	subj := "/CN=" + host
	return fmt.Sprintf("the upstream's certificate %q has no subjectAltName, only the legacy Common Name, and names are verified against SANs only. "+
		"Reissue it with a SAN. Self-signed: openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.crt -days 365 -subj %q -addext %q. "+
		"CA-signed: openssl req -new -key server.key -subj %q -addext %q -out server.csr && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -copy_extensions copy -days 365 -out server.crt. "+
		"Or, to accept this certificate as it is, set legacyCommonName: true in the tls-outbound binding's config: the Common Name is then matched when there is no DNS SAN, and the chain, expiry and key usage are still verified",
		c.Subject.String(), subj, "subjectAltName="+san, subj, "subjectAltName="+san) + UnexpandedVariable(c.Subject.CommonName)
}

func sanList(c *x509.Certificate) string {
	var names []string
	for _, n := range c.DNSNames {
		names = append(names, "DNS:"+n)
	}
	for _, ip := range c.IPAddresses {
		names = append(names, "IP:"+ip.String())
	}
	for _, u := range c.URIs {
		names = append(names, "URI:"+u.String())
	}
	if len(names) == 0 {
		return "no name"
	}
	return "[" + strings.Join(names, " ") + "]"
}

// TLS alert codes (RFC 8446 section 6, RFC 5246 section 7.2).
const (
	alertCloseNotify           = 0
	alertHandshakeFailure      = 40
	alertBadCertificate        = 42
	alertUnsupportedCert       = 43
	alertCertificateRevoked    = 44
	alertCertificateExpired    = 45
	alertCertificateUnknown    = 46
	alertUnknownCA             = 48
	alertAccessDenied          = 49
	alertProtocolVersion       = 70
	alertInsufficientSecurity  = 71
	alertCertificateRequired   = 116
	alertNoApplicationProtocol = 120
)

// AlertCode returns the TLS alert the upstream sent, if err carries one.
//
// crypto/tls reports an alert received from the peer as a *net.OpError with
// Op "remote error" around an unexported alert type, which errors.As cannot
// reach; [tls.AlertError] is only used for QUIC. Both are recognised.
func AlertCode(err error) (uint8, bool) {
	if a, ok := errors.AsType[tls.AlertError](err); ok {
		return uint8(a), true
	}
	for e := err; e != nil; {
		if op, ok := errors.AsType[*net.OpError](e); ok {
			if op.Op == "remote error" && op.Err != nil {
				v := reflect.ValueOf(op.Err)
				if v.Kind() == reflect.Uint8 && v.Type().PkgPath() == "crypto/tls" {
					return uint8(v.Uint()), true
				}
			}
			e = op.Err
			continue
		}
		break
	}
	return 0, false
}

func alertFailure(code uint8, err error, hs HandshakeFacts) Diagnosis {
	detail := fmt.Sprintf("the upstream sent TLS alert %d (%s) during the %s: %s", code, err.Error(), hs.Phase, hs.summary())
	d := func(r Reason) Diagnosis { return Diagnosis{Reason: r, Detail: detail} }
	switch code {
	case alertProtocolVersion:
		return d(ProtocolVersion)
	case alertInsufficientSecurity:
		return d(NoSharedCipher)
	case alertNoApplicationProtocol:
		return d(NoApplicationProtocol)
	case alertCertificateRequired:
		return d(NoClientCertificate)
	case alertBadCertificate, alertUnsupportedCert, alertCertificateRevoked, alertCertificateExpired,
		alertCertificateUnknown, alertUnknownCA, alertAccessDenied:
		// After the server's certificate, the only certificate left to
		// complain about is ours.
		switch {
		case hs.ClientCertificateSent:
			return d(ClientCertificateRejected)
		case hs.ClientCertificateRequested, hs.Phase == PhaseRequest:
			return d(NoClientCertificate)
		}
		return d(HandshakeFailure)
	case alertHandshakeFailure:
		switch {
		case hs.ClientCertificateRequested && !hs.ClientCertificateSent:
			return d(NoClientCertificate)
		case hs.ClientCertificateSent:
			return d(ClientCertificateRejected)
		case !hs.ServerCertificateSeen && hs.Phase == PhaseHandshake:
			// The upstream gave up before sending its certificate: it
			// found nothing acceptable in our ClientHello, most often no
			// cipher suite (or curve, or signature algorithm) in common.
			return d(NoSharedCipher)
		}
		return d(HandshakeFailure)
	case alertCloseNotify:
		return d(UpstreamReset)
	}
	return d(HandshakeFailure)
}

func (hs HandshakeFacts) summary() string {
	var b strings.Builder
	if hs.ServerName != "" {
		fmt.Fprintf(&b, "server name %q, ", hs.ServerName)
	}
	b.WriteString("server certificate ")
	if !hs.ServerCertificateSeen {
		b.WriteString("not ")
	}
	b.WriteString("received, client certificate ")
	switch {
	case hs.ClientCertificateRequested && hs.ClientCertificateSent:
		b.WriteString("requested and sent")
	case hs.ClientCertificateRequested:
		b.WriteString("requested, none sent")
	case hs.ClientCertificateSent:
		b.WriteString("configured")
	default:
		b.WriteString("not requested")
	}
	return b.String()
}

func isTimeout(err error) bool {
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// ClassifyInbound names the reason a TLS handshake on a Listener failed,
// from the error crypto/tls's server returned: the client sent no
// certificate where one is required (no_client_certificate), its
// certificate did not verify (unknown_authority, expired,
// invalid_certificate), no version, cipher suite or ALPN protocol in common,
// plain HTTP (not_tls), a timeout (handshake_timeout), or anything else,
// including the client refusing our certificate (handshake_failure).
//
// crypto/tls reports the failures its server detects itself as plain
// errors; their messages are matched, as they are for the client side.
func ClassifyInbound(err error) Reason {
	if err == nil {
		return Unknown
	}
	var r Reasoner
	if errors.As(err, &r) {
		return r.FailureReason()
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		if d, ok := certificateFailure(err); ok {
			if d.Reason == NotYetValid {
				return Expired
			}
			return d.Reason
		}
		return InvalidCertificate
	}
	if d, ok := certificateFailure(err); ok {
		return d.Reason
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return NotTLS
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return HandshakeTimeout
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "client didn't provide a certificate"):
		return NoClientCertificate
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "older than TLS 1.3"),
		strings.Contains(msg, "inappropriate protocol fallback"):
		return ProtocolVersion
	case strings.Contains(msg, "no cipher suite supported"):
		return NoSharedCipher
	case strings.Contains(msg, "unsupported application protocols"), strings.Contains(msg, "did not request an application protocol"):
		return NoApplicationProtocol
	}
	if code, ok := AlertCode(err); ok {
		switch code {
		case alertProtocolVersion:
			return ProtocolVersion
		case alertInsufficientSecurity:
			return NoSharedCipher
		case alertNoApplicationProtocol:
			return NoApplicationProtocol
		}
	}
	return HandshakeFailure
}
