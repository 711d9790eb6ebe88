package publish

import (
	"hash/maphash"
	"iter"
	"maps"
	"slices"

	"keyway.dev/proxy/internal/upstream"
)

// upstreamShards is how many maps an [Upstreams] is split into: a change to
// one Upstream copies one of them, 1/64 of the entries, so that it costs
// about the same with ten Services or ten thousand.
const upstreamShards = 64

// shardSeed hashes names to shards; any seed will do within a process.
var shardSeed = maphash.MakeSeed()

// Upstreams are a snapshot's Upstreams by Service name. Immutable once
// published; the zero value and nil are empty. Safe for concurrent reads.
type Upstreams struct {
	shards [upstreamShards]map[string]*upstream.Upstream
	n      int
	tls    int // how many have outbound TLS
}

func shardOf(name string) int {
	return int(maphash.String(shardSeed, name) % upstreamShards)
}

// Get returns the Upstream of Service name, nil when there is none. One
// hash and one map lookup: the request path calls it.
func (u *Upstreams) Get(name string) *upstream.Upstream {
	if u == nil {
		return nil
	}
	return u.shards[shardOf(name)][name]
}

// Len is the number of Upstreams.
func (u *Upstreams) Len() int {
	if u == nil {
		return 0
	}
	return u.n
}

// TLSLen is the number of Upstreams with outbound TLS: what a node's
// status counts without visiting each.
func (u *Upstreams) TLSLen() int {
	if u == nil {
		return 0
	}
	return u.tls
}

// All yields every Upstream with its Service name, in no particular order.
func (u *Upstreams) All() iter.Seq2[string, *upstream.Upstream] {
	return func(yield func(string, *upstream.Upstream) bool) {
		if u == nil {
			return
		}
		for _, shard := range u.shards {
			for name, up := range shard {
				if !yield(name, up) {
					return
				}
			}
		}
	}
}

// upstreamsEdit makes the next Upstreams from a published one, copying
// only the shards it changes (copy on write).
type upstreamsEdit struct {
	next   *Upstreams
	copied [upstreamShards]bool
}

func (u *Upstreams) edit() *upstreamsEdit {
	next := &Upstreams{}
	if u != nil {
		*next = *u // the shard maps are shared until written
	}
	return &upstreamsEdit{next: next}
}

func (e *upstreamsEdit) shard(name string) map[string]*upstream.Upstream {
	i := shardOf(name)
	if !e.copied[i] {
		m := maps.Clone(e.next.shards[i])
		if m == nil {
			m = make(map[string]*upstream.Upstream)
		}
		e.next.shards[i], e.copied[i] = m, true
	}
	return e.next.shards[i]
}

func (e *upstreamsEdit) set(name string, up *upstream.Upstream) {
	s := e.shard(name)
	old, ok := s[name]
	if !ok {
		e.next.n++
	}
	e.next.tls += hasTLS(up) - hasTLS(old)
	s[name] = up
}

func hasTLS(up *upstream.Upstream) int {
	if up != nil && up.TLS() != nil {
		return 1
	}
	return 0
}

func (e *upstreamsEdit) delete(name string) {
	old, ok := e.next.shards[shardOf(name)][name]
	if !ok {
		return // nothing to copy the shard for
	}
	delete(e.shard(name), name)
	e.next.n--
	e.next.tls -= hasTLS(old)
}

// names are the Service names, sorted.
func (u *Upstreams) names() []string {
	out := make([]string, 0, u.Len())
	for name := range u.All() {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
