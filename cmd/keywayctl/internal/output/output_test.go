package output

import (
	"testing"
	"time"
)

func TestAgeAndSpan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d         time.Duration
		age, span string
	}{
		{-time.Second, "0s", "1 second"},
		{45 * time.Second, "45s", "45 seconds"},
		{3 * time.Minute, "3m", "3 minutes"},
		{90 * time.Minute, "90m", "90 minutes"},
		{5 * time.Hour, "5h", "5 hours"},
		{40 * 24 * time.Hour, "40d", "40 days"},
		{24*time.Hour + time.Minute, "24h", "24 hours"},
		{3 * 365 * 24 * time.Hour, "3y", "1095 days"},
	}
	for _, tt := range tests {
		if got := Age(tt.d); got != tt.age {
			t.Errorf("Age(%v) = %q, want %q", tt.d, got, tt.age)
		}
		if got := Span(tt.d); got != tt.span {
			t.Errorf("Span(%v) = %q, want %q", tt.d, got, tt.span)
		}
	}
}

func TestParseFormat(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Format{"table": Table, "YAML": YAML, "json": JSON, "name": Name, "wide": Table} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("ParseFormat(xml) succeeded, want an error")
	}
}
