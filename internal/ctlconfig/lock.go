package ctlconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// lockWait is how long a writer waits for another to finish.
const lockWait = 10 * time.Second

// lock takes the lock file of path (path + ".lock", made with O_EXCL) and
// returns the function that releases it. keywayctl and keyway-dev are
// separate processes, so the lock is a file, as client-go locks kubeconfig;
// waiting for it can only poll.
func lock(path string) (unlock func(), err error) {
	name := path + ".lock"
	deadline := time.Now().Add(lockWait)
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 200*time.Millisecond) {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			f.Close()
			return func() { os.Remove(name) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("locking keywayctl config %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("locking keywayctl config %s: %s has existed for %s: another keywayctl or keyway-dev is writing the file; if none is running, remove %s",
				path, name, lockWait, name)
		}
		time.Sleep(delay)
	}
}
