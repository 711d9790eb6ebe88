package model

import (
	"fmt"
	"net/netip"
	"strings"

	"keyway.dev/internal/limits"
)

// maxNameLen is the longest resource name: names become NATS KV keys and DNS
// labels, and 64 keeps both comfortable.
const maxNameLen = 64

const nameRule = "names are lowercase letters, digits and hyphens, at most 64 characters, start with a letter and do not end with a hyphen"

// name checks metadata.name and reports whether it is valid.
func (c *checker) name(at fieldPath, kind, name string) bool {
	if name == "" {
		c.errorf(at, "metadata.name is required: give the %s a name (%s)", kind, nameRule)
		return false
	}
	problems := nameProblems(name)
	if len(problems) == 0 {
		return true
	}
	msg := fmt.Sprintf("name %s %s; %s", limits.Quote(name), strings.Join(problems, " and "), nameRule)
	if s := suggestName(name); s != "" && s != name {
		msg += fmt.Sprintf(": try %q", s)
	}
	c.errorf(at, "%s", msg)
	return false
}

// nameProblems says what is wrong with a resource name, most useful first.
func nameProblems(name string) []string {
	var problems []string
	if n := len(name); n > maxNameLen {
		problems = append(problems, fmt.Sprintf("is %d characters long", n))
	}
	var upper, other bool
	for _, r := range name {
		switch {
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
		default:
			other = true
		}
	}
	if upper {
		problems = append(problems, "has uppercase letters")
	}
	if other {
		problems = append(problems, "has characters other than letters, digits and hyphens")
	}
	if first := name[0]; !(first >= 'a' && first <= 'z' || first >= 'A' && first <= 'Z') {
		problems = append(problems, "does not start with a letter")
	}
	if strings.HasSuffix(name, "-") {
		problems = append(problems, "ends with a hyphen")
	}
	return problems
}

// suggestName makes a valid name out of an invalid one: lowercase, every run
// of other characters a hyphen, leading non-letters and trailing hyphens
// dropped, cut to 64 characters. It returns "" when nothing is left.
func suggestName(name string) string {
	var b strings.Builder
	hyphen := false
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			if b.Len() == 0 && r <= '9' {
				continue // a name starts with a letter
			}
			if hyphen && b.Len() > 0 {
				b.WriteByte('-')
			}
			hyphen = false
			b.WriteRune(r)
		default:
			hyphen = true
		}
	}
	s := b.String()
	if len(s) > maxNameLen {
		s = s[:maxNameLen]
	}
	return strings.TrimRight(s, "-")
}

// isDNSName reports whether s is a host name: dot-separated labels of
// letters, digits and hyphens, 1 to 63 characters each, not starting or
// ending with a hyphen, 253 characters in all. A trailing dot is not allowed.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	// An all-numeric name is a mistyped IP address, not a host name.
	if _, err := netip.ParseAddr(s); err == nil {
		return false
	}
	last := s[strings.LastIndexByte(s, '.')+1:]
	return strings.Trim(last, "0123456789") != ""
}

// isIP reports whether s is an IPv4 or IPv6 address (without brackets).
func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
