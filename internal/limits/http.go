package limits

import (
	"fmt"
	"net/http"

	"connectrpc.com/connect"
)

// Body refuses a request whose body is larger than max before reading any
// of it: a declared Content-Length over max is answered at once with
// ResourceExhausted in the caller's protocol (Connect, gRPC, gRPC-Web;
// HTTP 413 for anything else), and a body of unknown length is cut at max
// (the RPC then fails with ResourceExhausted too, from
// [connect.WithReadMaxBytes]). what names the API in the message.
func Body(what string, max int64, h http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
				"request body is %s; the %s accepts at most %s per request (docs/reference/limits.md): split the request or shorten its largest value",
				Size(int(r.ContentLength)), what, Size(int(max))))
			// Not reading the body: the server closes the connection after
			// the answer instead of draining 30 MB.
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			if ew.IsSupported(r) {
				_ = ew.Write(w, r, err)
				return
			}
			http.Error(w, err.Message(), http.StatusRequestEntityTooLarge)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		h.ServeHTTP(w, r)
	})
}
