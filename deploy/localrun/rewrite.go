package localrun

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// rewriter maps what only a cluster provides to this machine, in one
// pod's strings (arguments, environment, ConfigMap files): a Service or pod
// DNS name and port becomes a loopback address, a wildcard bind address the
// pod's own loopback port, and a mount path the pod's folder. Each kind is
// replaced in one pass, so that a replacement is never rewritten again (the
// pods' folders may lie under a mount path such as /tmp).
type rewriter struct {
	hosts  map[string]string // host:port → 127.0.0.1:PORT
	names  map[string]string // a host name before :PORT → a loopback address (compose)
	addrs  map[string]string // an address alone or before :PORT → a loopback address (compose)
	mounts map[string]string // mount path → folder
}

func newRewriter() *rewriter {
	return &rewriter{hosts: map[string]string{}, names: map[string]string{}, addrs: map[string]string{}, mounts: map[string]string{}}
}

// name maps a host name where a port follows it.
func (r *rewriter) name(host, addr string) { r.names[host] = addr }

// addr maps an address (0.0.0.0, 127.0.0.1) where it stands alone or
// before a port.
func (r *rewriter) addr(from, to string) { r.addrs[from] = to }

// hostPort maps host:port, where host is a whole name (not the tail of a
// longer one) and port a whole number.
func (r *rewriter) hostPort(host string, port int32, addr string) {
	r.hosts[fmt.Sprintf("%s:%d", host, port)] = addr
}

// mount maps a mount path, where it begins a path, to folder.
func (r *rewriter) mount(path, folder string) { r.mounts[path] = folder }

func (r *rewriter) apply(s string) string {
	s = replaceWhole(s, r.hosts, func(b byte) bool { return isAlnum(b) || b == '.' || b == '-' }, func(b byte) bool { return b >= '0' && b <= '9' }, true)
	notName := func(b byte) bool { return isAlnum(b) || b == '.' || b == '-' || b == '_' }
	s = replaceWhole(s, r.names, notName, func(b byte) bool { return b != ':' }, false)
	s = replaceWhole(s, r.addrs, notName, notName, true)
	return replaceWhole(s, r.mounts, func(b byte) bool { return isAlnum(b) || strings.IndexByte("._/-", b) >= 0 }, func(b byte) bool { return isAlnum(b) || strings.IndexByte("._-", b) >= 0 }, true)
}

func isAlnum(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

// replaceWhole replaces, in one pass, every key of m found in s that the
// byte before does not continue (inBefore) and the byte after does not
// continue (inAfter), and at the end of s when endOK; the longest key wins
// where several start at one place.
func replaceWhole(s string, m map[string]string, inBefore, inAfter func(byte) bool, endOK bool) string {
	if len(m) == 0 {
		return s
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return len(b) - len(a) })
	var b strings.Builder
	for i := 0; i < len(s); {
		matched := false
		if i == 0 || !inBefore(s[i-1]) {
			for _, k := range keys {
				if strings.HasPrefix(s[i:], k) && (i+len(k) == len(s) && endOK || i+len(k) < len(s) && !inAfter(s[i+len(k)])) {
					b.WriteString(m[k])
					i += len(k)
					matched = true
					break
				}
			}
		}
		if !matched {
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// expandEnv expands $(NAME) in a container's env value from the variables
// defined before it, as the kubelet does; $$ is a literal $.
func expandEnv(s string, defined map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if s[i] == '$' && i+1 < len(s) && s[i+1] == '(' {
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				name := s[i+2 : i+end]
				if v, ok := defined[name]; ok {
					b.WriteString(v)
					i += end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
