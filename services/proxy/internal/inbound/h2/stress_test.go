package h2_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// body is what /size/n answers: n bytes that say which request they are
// for, so that a response handed the wrong buffer shows.
func body(id, n int) []byte {
	b := bytes.Repeat([]byte(strconv.Itoa(id)+"."), n/2+8)
	return b[:n]
}

// TestConcurrentResponsesKeepTheirBytes sends many requests at once over
// a few connections, with bodies around the sizes where a response is
// written whole at the handler's end (and its state handed over to the
// serve loop) or in chunks: each must come back with its own bytes.
func TestConcurrentResponsesKeepTheirBytes(t *testing.T) {
	t.Parallel()
	p := startPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.URL.Query().Get("id"))
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Query().Has("flush") {
			w.(http.Flusher).Flush()
		}
		w.Write(body(id, n))
	}), nil)
	cfg := p.cfg.Clone()
	cfg.NextProtos = nil
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxConnsPerHost: 3}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	sizes := []int{0, 1, 100, 4095, 4096, 4097, 16_384, 70_000}
	var wg sync.WaitGroup
	for id := range 400 {
		wg.Go(func() {
			n := sizes[id%len(sizes)]
			url := fmt.Sprintf("https://%s/size?id=%d&n=%d", p.ours, id, n)
			if id%5 == 0 {
				url += "&flush"
			}
			res, err := c.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			got, err := io.ReadAll(res.Body)
			if err != nil || res.ProtoMajor != 2 || !bytes.Equal(got, body(id, n)) {
				t.Errorf("request %d (%d bytes): %s, %d bytes, %v; want its own %d bytes over HTTP/2", id, n, res.Proto, len(got), err, n)
			}
		})
	}
	wg.Wait()
}
