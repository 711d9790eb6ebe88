package stack

import (
	"bytes"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A child that prints 2 MiB without a newline and then exits: the reader
// cuts the line at MaxLine, says how much it cut, drains the rest, and
// returns when the child exits; the child is never blocked on a full pipe.
func TestCopyLinesLongLineFromChild(t *testing.T) {
	cmd := exec.Command("sh", "-c", `head -c 2097152 /dev/zero | tr '\0' x; echo; echo after`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	last := &tail{}
	done := make(chan error, 1)
	go func() { done <- copyLines(&w, "[child] ", out, MaxLine, last) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("copyLines: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("copyLines did not return after the child wrote a 2 MiB line and exited: the launcher blocked")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the child: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(w.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want the cut line and %q", len(lines), "after")
	}
	first := lines[0]
	wantCut := 2097152 - MaxLine
	if !strings.HasPrefix(first, "[child] "+strings.Repeat("x", MaxLine)+" … [") ||
		!strings.Contains(first, "1048576 bytes cut") || strings.Count(first, "x") != MaxLine {
		t.Errorf("the long line: %d bytes starting %.40q, ending %q; want MaxLine x's and a note that %d bytes were cut",
			len(first), first, first[max(0, len(first)-80):], wantCut)
	}
	if lines[1] != "[child] after" {
		t.Errorf("the line after the long one: %q", lines[1])
	}
	if got := last.Lines(); len(got) != 2 || got[1] != "after" || len(got[0]) > 600 {
		t.Errorf("kept lines: %d, last %q", len(got), got[len(got)-1])
	}
}

// A child that prints 2 MiB without any newline and exits: the reader
// returns with the prefix of that line, and the child exits (not blocked).
func TestCopyLinesUnterminatedHugeLine(t *testing.T) {
	cmd := exec.Command("sh", "-c", `head -c 2097152 /dev/zero | tr '\0' y`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- copyLines(&w, "", out, MaxLine, nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("copyLines: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("copyLines blocked on a 2 MiB line without a newline")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the child: %v", err)
	}
	got := w.String()
	if !strings.HasPrefix(got, strings.Repeat("y", MaxLine)+" … [1048576 bytes cut") || strings.Count(got, "\n") != 1 {
		t.Errorf("output: %d bytes, tail %q", len(got), got[max(0, len(got)-80):])
	}
}

func TestCopyLinesShortLines(t *testing.T) {
	var w bytes.Buffer
	last := &tail{}
	in := "one\r\ntwo\n\nthree"
	for i := 0; i < tailLines; i++ {
		in = "old\n" + in
	}
	if err := copyLines(&w, "> ", strings.NewReader(in), 8, last); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(w.String(), "> one\n> two\n> \n> three\n") {
		t.Errorf("output %q", w.String())
	}
	if got := last.Lines(); len(got) != tailLines || got[tailLines-1] != "three" || got[tailLines-4] != "one" {
		t.Errorf("kept lines %q", got)
	}
}

// A busy address is named with the flag that moves it.
func TestCheckPortsNamesTheBusyFlag(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	free := "127.0.0.1:0"
	err = checkPorts([]listenAddr{{"--policy", free}, {"--proxy", l.Addr().String()}})
	if err == nil || !strings.Contains(err.Error(), "--proxy "+l.Addr().String()) || !strings.Contains(err.Error(), "address already in use") ||
		strings.Contains(err.Error(), "--policy") {
		t.Errorf("checkPorts with --proxy busy: %v", err)
	}
	err = checkPorts([]listenAddr{{"--policy", "127.0.0.1:1"}, {"--secrets", "127.0.0.1:1"}})
	if err == nil || !strings.Contains(err.Error(), "--secrets 127.0.0.1:1 is also given to --policy") {
		t.Errorf("checkPorts with one address twice: %v", err)
	}
	l.Close()
	if err := checkPorts([]listenAddr{{"--proxy", l.Addr().String()}}); err != nil {
		t.Errorf("checkPorts after the port was freed: %v", err)
	}
}
