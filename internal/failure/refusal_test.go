package failure_test

import (
	"testing"

	"keyway.dev/internal/failure"
)

func TestRefusalPage(t *testing.T) {
	// nginx 1.22's pages, byte for byte (ngx_http_special_response.c).
	const noCert = "<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>No required SSL certificate was sent</center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
	const badCert = "<html>\r\n<head><title>400 The SSL certificate error</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The SSL certificate error</center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
	for _, tc := range []struct {
		name string
		code int
		body string
		want failure.Reason
	}{
		{"nginx 496", 400, noCert, failure.NoClientCertificate},
		{"nginx 495", 400, badCert, failure.ClientCertificateRejected},
		{"another 400", 400, "<html><head><title>400 Bad Request</title></head></html>", ""},
		{"the same page with another status", 403, noCert, ""},
		{"an application's JSON 400", 400, `{"error":"No required SSL certificate was sent"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := failure.RefusalPage(tc.code, []byte(tc.body))
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("RefusalPage = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}
