package model

import (
	"fmt"
	"net/netip"
	"strings"

	"keyway.dev/internal/identity"
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

// isDNSName reports whether s is a host name. The syntax is
// [identity.IsDNSName]'s, so that a name a Listener or Service accepts is
// one an identity rule's dnsName accepts too.
func isDNSName(s string) bool { return identity.IsDNSName(s) }

// isIP reports whether s is an IPv4 or IPv6 address (without brackets).
func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
