package stack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
)

// MaxLine is the longest line of a child's output the launcher prints
// whole; the rest of a longer line is dropped (and counted), so that a child
// writing a huge line never blocks itself or the launcher.
const MaxLine = 1 << 20

// tailLines is how many of a child's last lines the launcher keeps to
// report when the child dies.
const tailLines = 20

// tail keeps the last lines a child wrote.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == tailLines {
		copy(t.lines, t.lines[1:])
		t.lines = t.lines[:tailLines-1]
	}
	t.lines = append(t.lines, line)
}

// Lines returns a copy of the kept lines, oldest first.
func (t *tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

// copyLines writes each line of r to w after prefix until r ends, and keeps
// the last ones in t (if not nil). A line longer than max is cut: its first
// max bytes are written followed by a note of how many bytes were cut, and
// the rest of the line is read and dropped, so r is always drained. A final
// line without a newline is written too. It returns r's error, nil at EOF.
func copyLines(w io.Writer, prefix string, r io.Reader, max int, t *tail) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	cut := 0
	emit := func() {
		s := string(line)
		if cut > 0 {
			s += fmt.Sprintf(" … [%d bytes cut: line longer than %d bytes]", cut, max)
		}
		fmt.Fprintf(w, "%s%s\n", prefix, s)
		if t != nil {
			// Keep the report short: a cut line is kept as its start.
			if len(s) > 512 {
				s = s[:512] + fmt.Sprintf(" … [%d bytes cut]", len(line)-512+cut)
			}
			t.add(s)
		}
		line, cut = line[:0], 0
	}
	for {
		chunk, err := br.ReadSlice('\n')
		chunk = trimNewline(chunk, err)
		if room := max - len(line); room > 0 {
			n := min(room, len(chunk))
			line = append(line, chunk[:n]...)
			cut += len(chunk) - n
		} else {
			cut += len(chunk)
		}
		switch {
		case err == nil:
			emit()
		case errors.Is(err, bufio.ErrBufferFull):
			// The line goes on; keep reading it.
		default:
			if len(line) > 0 || cut > 0 {
				emit()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// trimNewline drops the line end of a complete line.
func trimNewline(b []byte, err error) []byte {
	if err != nil {
		return b
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// listenAddr is an address the stack will listen on and the flag that sets it.
type listenAddr struct {
	Flag string
	Addr string
}

// listenAddrs lists every address the stack listens on, with its flag.
func listenAddrs(cfg Config) []listenAddr {
	addrs := []listenAddr{
		{"--nats-port", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.NATSPort))},
		{"--policy", cfg.PolicyAddr},
		{"--proxy", cfg.ProxyAddr},
		{"--proxy-admin", cfg.ProxyAdmin},
		{"--proxy-tls", cfg.ProxyTLSAddr},
		{"--upstream", cfg.UpstreamAddr},
		{"--secrets", cfg.SecretsAddr},
		{"--secrets-internal", cfg.SecretsInternal},
	}
	if cfg.Vault {
		addrs = append(addrs, listenAddr{"--vault-addr", cfg.VaultAddr})
	}
	return addrs
}

// checkPorts tries to listen on each address before any part starts, so
// that a busy port is named with the flag that moves it, rather than found
// later as a child that died.
func checkPorts(addrs []listenAddr) error {
	var busy []string
	seen := map[string]string{}
	for _, a := range addrs {
		if a.Addr == "" {
			continue
		}
		if other, ok := seen[a.Addr]; ok {
			busy = append(busy, fmt.Sprintf("%s %s is also given to %s", a.Flag, a.Addr, other))
			continue
		}
		seen[a.Addr] = a.Flag
		l, err := net.Listen("tcp", a.Addr)
		if err != nil {
			busy = append(busy, fmt.Sprintf("%s %s: %v", a.Flag, a.Addr, err))
			continue
		}
		l.Close()
	}
	if len(busy) > 0 {
		return fmt.Errorf("cannot listen (another process, perhaps an earlier keyway-dev, holds the port; stop it or give the flag another address): %s", strings.Join(busy, "; "))
	}
	return nil
}
