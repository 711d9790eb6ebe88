package testwait_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"keyway.dev/internal/testwait"
)

func TestPollReturnsOnceCheckSucceeds(t *testing.T) {
	n := 0
	err := testwait.Poll(10*time.Second, func() error {
		n++
		if n < 3 {
			return fmt.Errorf("attempt %d", n)
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Poll: %v after %d checks, want nil after 3", err, n)
	}
}

func TestPollReportsTheLastErrorOnTimeout(t *testing.T) {
	n := 0
	start := time.Now()
	err := testwait.Poll(50*time.Millisecond, func() error {
		n++
		return fmt.Errorf("attempt %d", n)
	})
	if took := time.Since(start); took < 50*time.Millisecond || took > 5*time.Second {
		t.Errorf("Poll returned after %s, want about 50ms", took)
	}
	if err == nil || err.Error() != fmt.Sprintf("attempt %d", n) || n < 2 {
		t.Fatalf("Poll: %v after %d checks, want the last attempt's error after several", err, n)
	}
}

// fakeTB records Fatalf instead of ending the goroutine.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestEventuallyFailsWithTheLastError(t *testing.T) {
	f := &fakeTB{TB: t}
	testwait.Eventually(f, 20*time.Millisecond, func() error { return errors.New("port 8080 still closed") })
	if !strings.Contains(f.msg, "port 8080 still closed") {
		t.Fatalf("failure message %q does not carry the check's error", f.msg)
	}
	f.msg = ""
	testwait.Until(f, 20*time.Millisecond, "the node to be listed", func() bool { return false })
	if !strings.Contains(f.msg, "the node to be listed") {
		t.Fatalf("failure message %q does not say what it waited for", f.msg)
	}
}
