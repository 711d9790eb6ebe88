package tlsconf

import (
	"crypto/tls"
	"runtime"
	"strings"
	"sync"
	"weak"

	"keyway.dev/internal/model"
)

// shared holds the configs [SharedOutbound] built, by context and offered
// ALPN. Its keys are weak: a context nothing holds any more is collected,
// and its configs go with it.
var shared = struct {
	sync.Mutex
	m map[weak.Pointer[model.OutboundTLS]]map[string]*tls.Config
}{m: make(map[weak.Pointer[model.OutboundTLS]]map[string]*tls.Config)}

// SharedOutbound is [Outbound] without a session cache, built once per
// context o and offered ALPN list and shared by every caller that passes
// them: 10,000 upstreams decoded from one config ([model.OutboundCache])
// hold one CA pool and one config instead of 10,000. The config must not
// be modified; the caller gives each connection's clone
// ([OutboundConn]) the session cache of its own, so that resumption stays
// within one upstream.
func SharedOutbound(upstream string, o *model.OutboundTLS, protocol string) (*tls.Config, error) {
	alpn := strings.Join(o.OfferedALPN(protocol), ",")
	key := weak.Make(o)
	shared.Lock()
	cfg := shared.m[key][alpn]
	shared.Unlock()
	if cfg != nil {
		return cfg, nil
	}
	// Built outside the lock: a system pool may take a while. Two racing
	// builds keep the first stored.
	cfg, err := Outbound(upstream, o, protocol)
	if err != nil {
		return nil, err
	}
	cfg.ClientSessionCache = nil
	shared.Lock()
	defer shared.Unlock()
	byALPN := shared.m[key]
	if byALPN == nil {
		byALPN = make(map[string]*tls.Config, 1)
		shared.m[key] = byALPN
		runtime.AddCleanup(o, func(key weak.Pointer[model.OutboundTLS]) {
			shared.Lock()
			defer shared.Unlock()
			delete(shared.m, key)
		}, key)
	}
	if prev := byALPN[alpn]; prev != nil {
		return prev, nil
	}
	byALPN[alpn] = cfg
	return cfg, nil
}

// sharedLen is the number of contexts with shared configs.
func sharedLen() int {
	shared.Lock()
	defer shared.Unlock()
	return len(shared.m)
}
