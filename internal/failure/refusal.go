package failure

import "bytes"

// MaxRefusalPage bounds the body of an HTTP answer that [RefusalPage]
// inspects: nginx's pages are about 230 bytes.
const MaxRefusalPage = 1024

// refusalPages are the pages a server answers with when it completed the
// TLS handshake but refuses the client certificate at the HTTP layer. nginx
// with `ssl_verify_client on` does so with status 400 (internally 496 and
// 495; ngx_http_special_response.c), so a client that sent no certificate,
// or one it does not trust, gets an HTTP answer, not a handshake failure.
var refusalPages = []struct {
	title  []byte
	reason Reason
}{
	{[]byte("<title>400 No required SSL certificate was sent</title>"), NoClientCertificate},
	{[]byte("<title>400 The SSL certificate error</title>"), ClientCertificateRejected},
}

// RefusalPage reports whether an upstream's answer with status code and
// body is a refusal of our client certificate made after the handshake,
// and which. Only status 400 with a body of at most [MaxRefusalPage] bytes
// can be one.
func RefusalPage(code int, body []byte) (Reason, bool) {
	if code != 400 || len(body) > MaxRefusalPage {
		return "", false
	}
	for _, p := range refusalPages {
		if bytes.Contains(body, p.title) {
			return p.reason, true
		}
	}
	return "", false
}

// PageTitle is the <title> of an HTML page, at most 80 bytes of it, for
// error details.
func PageTitle(body []byte) string {
	_, rest, ok := bytes.Cut(body, []byte("<title>"))
	if !ok {
		return ""
	}
	title, _, _ := bytes.Cut(rest, []byte("</title>"))
	if len(title) > 80 {
		title = title[:80]
	}
	return string(title)
}
