package h1

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's CPU time (client and server).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkServe makes keep-alive GETs over loopback TCP to net/http's
// server and to Server, serving a handler that writes a short body: the
// servers' own cost per request (the client's is the same for both).
func BenchmarkServe(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, world")
	})
	for _, name := range []string{"net-http", "h1"} {
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			quiet := log.New(io.Discard, "", 0)
			if name == "h1" {
				srv := &Server{Handler: handler, ReadHeaderTimeout: 10e9, IdleTimeout: 60e9, ErrorLog: quiet}
				go srv.Serve(context.Background(), ln)
				b.Cleanup(func() { srv.Close() })
			} else {
				srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10e9, IdleTimeout: 60e9, ErrorLog: quiet}
				go srv.Serve(ln)
				b.Cleanup(func() { srv.Close() })
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			const req = "GET /x HTTP/1.1\r\nHost: a.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
			get := func() {
				if _, err := io.WriteString(c, req); err != nil {
					b.Fatal(err)
				}
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			get()
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				get()
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
