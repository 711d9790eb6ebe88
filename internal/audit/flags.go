package audit

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Flags are the audit stream's limits as a service's command line gives
// them: --audit-max-age and --audit-max-bytes (envflag.Parse reads
// KEYWAY_AUDIT_MAX_AGE and KEYWAY_AUDIT_MAX_BYTES).
type Flags struct {
	maxAge, maxBytes string
}

// AddFlags adds the audit flags to fs.
func AddFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.maxAge, "audit-max-age", "2160h",
		"how long the audit stream keeps a record, e.g. 2160h (90 days)")
	fs.StringVar(&f.maxBytes, "audit-max-bytes", "1GiB",
		"size of the audit stream beyond which the oldest records go, e.g. 1GiB, 512MiB or bytes")
	return f
}

// Config is the writer configuration of service with replicas, once the
// flags are parsed.
func (f *Flags) Config(service string, replicas int) (Config, error) {
	age, err := time.ParseDuration(f.maxAge)
	if err != nil || age < time.Minute {
		return Config{}, fmt.Errorf("--audit-max-age (KEYWAY_AUDIT_MAX_AGE): %q is not a duration of at least 1m, such as 2160h", short(f.maxAge))
	}
	size, err := ParseSize(f.maxBytes)
	if err != nil || size < 1<<20 {
		return Config{}, fmt.Errorf("--audit-max-bytes (KEYWAY_AUDIT_MAX_BYTES): %q is not a size of at least 1MiB, such as 1GiB, 512MiB or 1073741824", short(f.maxBytes))
	}
	return Config{Service: service, MaxAge: age, MaxBytes: size, Replicas: replicas}, nil
}

// ParseSize reads a byte count: a number, optionally followed by KiB, MiB,
// GiB or TiB (or KB, MB, GB, TB, in powers of ten).
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("audit: %q is not a size", short(s))
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("audit: %q is too large", short(s))
	}
	return n * mult, nil
}

func short(s string) string { return cut(s, 64) }
