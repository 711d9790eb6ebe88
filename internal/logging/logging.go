// Package logging builds the log/slog logger every Keyway binary uses, from
// the same two settings: format (text or json) and level.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// New returns a logger writing to w in the given format at the given level.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(traceHandler{slog.NewTextHandler(w, opts)}), nil
	case "json":
		return slog.New(traceHandler{slog.NewJSONHandler(w, opts)}), nil
	}
	return nil, fmt.Errorf("log format %q: use text or json", format)
}

// Env returns the environment variable key, or def when it is unset or empty.
// Flags take their defaults from it so that every flag has an environment
// form.
func Env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
