package model

import (
	"crypto/sha256"
	"runtime"
	"sync"
	"weak"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// OutboundCache lets [Decode] share the TLS context of tls-outbound configs
// it decoded before. A fleet of Services bound to one CA and one client
// certificate repeats the same config thousands of times: decoded once
// each, 10,000 of them took a proxy node 60 MB and over a second to parse
// (keys, certificates, pools). A config equal byte for byte (its
// deterministic encoding) to one still in use gets the same
// *[OutboundTLS]: it is immutable, and its Fingerprint is the same anyway.
//
// Entries are weak: a context nothing holds any more is collected, and
// its entry goes with it, so the cache holds at most the contexts the
// node's stored bindings use. Safe for concurrent use.
type OutboundCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]weak.Pointer[OutboundTLS]
}

// NewOutboundCache returns an empty cache.
func NewOutboundCache() *OutboundCache {
	return &OutboundCache{m: make(map[[sha256.Size]byte]weak.Pointer[OutboundTLS])}
}

// WithOutboundCache has [Decode] share equal tls-outbound contexts through
// cache.
func WithOutboundCache(cache *OutboundCache) DecodeOption {
	return func(c *checker) { c.outboundCache = cache }
}

// outboundKey is the key of cfg: the hash of its deterministic encoding;
// ok is false when it cannot be encoded (it is then decoded as usual).
func outboundKey(cfg *structpb.Struct) (key [sha256.Size]byte, ok bool) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(cfg)
	if err != nil {
		return key, false
	}
	return sha256.Sum256(data), true
}

func (oc *OutboundCache) get(key [sha256.Size]byte) *OutboundTLS {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return oc.m[key].Value()
}

func (oc *OutboundCache) put(key [sha256.Size]byte, o *OutboundTLS) {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.m[key].Value() != nil {
		return
	}
	wp := weak.Make(o)
	oc.m[key] = wp
	runtime.AddCleanup(o, func(key [sha256.Size]byte) {
		oc.mu.Lock()
		defer oc.mu.Unlock()
		if oc.m[key] == wp {
			delete(oc.m, key)
		}
	}, key)
}

// len is the number of entries, collected or not yet.
func (oc *OutboundCache) len() int {
	oc.mu.Lock()
	defer oc.mu.Unlock()
	return len(oc.m)
}
