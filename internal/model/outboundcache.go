package model

import (
	"crypto/sha256"
	"encoding/binary"
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
// in order, every value tagged with its kind and length): a deterministic
// proto encoding took as long again as the rest of decoding a binding. ok
// is false when cfg nests deeper than maxKeyDepth (it is then decoded as
// usual).
func outboundKey(cfg *structpb.Struct) (key [sha256.Size]byte, ok bool) {
	bp := keyBuffers.Get().(*[]byte)
	defer keyBuffers.Put(bp)
	buf, ok := appendStruct((*bp)[:0], cfg, 0)
	*bp = buf
	if !ok {
		return key, false
	}
	return sha256.Sum256(buf), true
}

// keyBuffers are the buffers outboundKey writes canonical forms into,
// reused: a config is a few kilobytes of PEM.
var keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// maxKeyDepth bounds the nesting outboundKey walks; a tls-outbound config
// nests three levels (certificate, revocation).
const maxKeyDepth = 8

func appendStruct(b []byte, s *structpb.Struct, depth int) ([]byte, bool) {
	fields := s.GetFields()
	b = appendTag(b, 'm', uint64(len(fields)))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		b = appendTag(b, 'k', uint64(len(k)))
		b = append(b, k...)
		var ok bool
		if b, ok = appendValue(b, fields[k], depth+1); !ok {
			return b, false
		}
	}
	return b, true
}

func appendValue(b []byte, v *structpb.Value, depth int) ([]byte, bool) {
	if depth > maxKeyDepth {
		return b, false
	}
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		b = appendTag(b, 's', uint64(len(k.StringValue)))
		b = append(b, k.StringValue...)
	case *structpb.Value_NumberValue:
		b = appendTag(b, 'f', math.Float64bits(k.NumberValue))
	case *structpb.Value_BoolValue:
		var bit uint64
		if k.BoolValue {
			bit = 1
		}
		b = appendTag(b, 'b', bit)
	case *structpb.Value_StructValue:
		return appendStruct(b, k.StructValue, depth)
	case *structpb.Value_ListValue:
		values := k.ListValue.GetValues()
		b = appendTag(b, 'l', uint64(len(values)))
		for _, e := range values {
			var ok bool
			if b, ok = appendValue(b, e, depth+1); !ok {
				return b, false
			}
		}
	default: // null, or no kind
		b = appendTag(b, 'n', 0)
	}
	return b, true
}

// appendTag appends a kind and a number (a length, or a value's bits).
func appendTag(b []byte, kind byte, n uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, kind), n)
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
