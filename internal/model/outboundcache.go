package model

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"weak"

	"google.golang.org/protobuf/types/known/structpb"
)

// OutboundCache lets [Decode] share the TLS context of tls-outbound configs
// it decoded before. A fleet of Services bound to one CA and one client
// certificate repeats the same config thousands of times: decoded once
// each, 10,000 of them took a proxy node 60 MB and over a second to parse
// (keys, certificates, pools). A config equal (the same keys and values)
// to one still in use gets the same
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

// outboundKey is the key of cfg: the SHA-256 of its canonical form (keys
// in order, every value tagged with its kind and length), written straight
// into the hash: a deterministic proto encoding took as long again as the
// rest of decoding a binding. ok is false when cfg nests deeper than
// maxKeyDepth (it is then decoded as usual).
func outboundKey(cfg *structpb.Struct) (key [sha256.Size]byte, ok bool) {
	h := sha256.New()
	if !hashStruct(h, cfg, 0) {
		return key, false
	}
	h.Sum(key[:0])
	return key, true
}

// maxKeyDepth bounds the nesting outboundKey walks; a tls-outbound config
// nests three levels (certificate, revocation).
const maxKeyDepth = 8

func hashStruct(h hash.Hash, s *structpb.Struct, depth int) bool {
	fields := s.GetFields()
	writeTag(h, 'm', len(fields))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		writeTag(h, 'k', len(k))
		h.Write([]byte(k))
		if !hashValue(h, fields[k], depth+1) {
			return false
		}
	}
	return true
}

func hashValue(h hash.Hash, v *structpb.Value, depth int) bool {
	if depth > maxKeyDepth {
		return false
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		writeTag(h, 's', len(k.StringValue))
		h.Write([]byte(k.StringValue))
	case *structpb.Value_NumberValue:
		writeTag(h, 'f', int(math.Float64bits(k.NumberValue)))
	case *structpb.Value_BoolValue:
		b := 0
		if k.BoolValue {
			b = 1
		}
		writeTag(h, 'b', b)
	case *structpb.Value_StructValue:
		return hashStruct(h, k.StructValue, depth)
	case *structpb.Value_ListValue:
		values := k.ListValue.GetValues()
		writeTag(h, 'l', len(values))
		for _, e := range values {
			if !hashValue(h, e, depth+1) {
				return false
			}
		}
	default: // null, or no kind
		writeTag(h, 'n', 0)
	}
	return true
}

// writeTag writes a kind and a number (a length, or a value's bits).
func writeTag(h hash.Hash, kind byte, n int) {
	var b [9]byte
	b[0] = kind
	binary.BigEndian.PutUint64(b[1:], uint64(n))
	h.Write(b[:])
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
