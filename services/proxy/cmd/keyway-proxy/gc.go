package main

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// defaultGCPercent is the node's collector target when neither
// --gc-percent nor GOGC is given: 200 rather than Go's 100. A node's live
// heap is small (about 30 MiB resident under load), and collecting half as
// often saved a median 12% of its CPU per keep-alive request to an mTLS
// upstream for about 3 MiB more resident memory (docs/performance.md,
// BenchmarkGCSettings); 400 saved a little more for 10 MiB and five times
// the live heap at peak.
const defaultGCPercent = 200

// gcSettings are --gc-percent and --memory-limit as given.
type gcSettings struct {
	percent, limit string
}

func (g *gcSettings) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&g.percent, "gc-percent", strconv.Itoa(defaultGCPercent), "garbage collector target: heap growth in percent over the live heap that starts a collection (Go's GOGC), or off; GOGC, when set, wins over the default")
	fs.StringVar(&g.limit, "memory-limit", "", "soft limit on the memory the Go runtime uses, in bytes or with a KiB, MiB, GiB or TiB suffix (Go's GOMEMLIMIT), e.g. the container's memory limit; none by default; GOMEMLIMIT, when set, wins over the default")
}

// gcApplied is what the collector runs with and where each value came from.
type gcApplied struct {
	percent, limit         int64 // percent -1: off; limit math.MaxInt64: none
	percentFrom, limitFrom string
}

// resolve reads the settings: a flag given (on the command line or as
// KEYWAY_GC_PERCENT / KEYWAY_MEMORY_LIMIT) wins, then GOGC / GOMEMLIMIT,
// which the runtime has already applied, then the defaults. getenv is
// os.Getenv; set holds the flags given.
func (g *gcSettings) resolve(set map[string]bool, getenv func(string) string) (gcApplied, error) {
	a := gcApplied{percent: defaultGCPercent, percentFrom: "default", limit: math.MaxInt64, limitFrom: "default"}
	switch {
	case set["gc-percent"]:
		p, err := parseGCPercent(g.percent)
		if err != nil {
			return a, fmt.Errorf("--gc-percent: %w", err)
		}
		a.percent, a.percentFrom = p, "flag"
	case getenv("GOGC") != "":
		p, err := parseGCPercent(getenv("GOGC"))
		if err != nil {
			return a, fmt.Errorf("GOGC: %w", err)
		}
		a.percent, a.percentFrom = p, "GOGC"
	}
	switch {
	case set["memory-limit"]:
		n, err := parseMemoryLimit(g.limit)
		if err != nil {
			return a, fmt.Errorf("--memory-limit: %w", err)
		}
		a.limit, a.limitFrom = n, "flag"
	case getenv("GOMEMLIMIT") != "":
		n, err := parseMemoryLimit(getenv("GOMEMLIMIT"))
		if err != nil {
			return a, fmt.Errorf("GOMEMLIMIT: %w", err)
		}
		a.limit, a.limitFrom = n, "GOMEMLIMIT"
	}
	return a, nil
}

// apply sets the collector and logs what it runs with, once.
func (a gcApplied) apply(log *slog.Logger) {
	debug.SetGCPercent(int(a.percent))
	debug.SetMemoryLimit(a.limit)
	percent, limit := strconv.FormatInt(a.percent, 10), "none"
	if a.percent < 0 {
		percent = "off"
	}
	if a.limit != math.MaxInt64 {
		limit = strconv.FormatInt(a.limit, 10)
	}
	log.Info("garbage collector", "gc_percent", percent, "gc_percent_from", a.percentFrom,
		"memory_limit_bytes", limit, "memory_limit_from", a.limitFrom)
}

// parseGCPercent reads a GOGC value: off, or a whole percentage from 1 to
// 100000.
func parseGCPercent(v string) (int64, error) {
	if strings.EqualFold(v, "off") {
		return -1, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 || n > 100000 {
		return 0, fmt.Errorf("%q is neither off nor a percentage from 1 to 100000; the default is %d", truncate(v), defaultGCPercent)
	}
	return n, nil
}

// parseMemoryLimit reads a GOMEMLIMIT value: bytes, or a number with a B,
// KiB, MiB, GiB or TiB suffix, at least 16 MiB (below that the collector
// would run without pause); "off" is no limit.
func parseMemoryLimit(v string) (int64, error) {
	if strings.EqualFold(v, "off") {
		return math.MaxInt64, nil
	}
	num, unit := v, int64(1)
	for _, s := range []struct {
		suffix string
		unit   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if n, ok := strings.CutSuffix(v, s.suffix); ok {
			num, unit = n, s.unit
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	const lo, hi = 16 << 20, 1 << 50
	if err != nil || n <= 0 || n > hi/unit || n*unit < lo {
		return 0, fmt.Errorf("%q is not a size from 16MiB to 1024TiB (bytes, or a number with a KiB, MiB, GiB or TiB suffix), or off", truncate(v))
	}
	return n * unit, nil
}

// truncate bounds a value before it is echoed in an error.
func truncate(v string) string {
	if len(v) > 64 {
		return v[:64] + "…"
	}
	return v
}
