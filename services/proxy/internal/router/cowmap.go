package router

import (
	"hash/maphash"
	"iter"
	"maps"
)

// cowParts is how many maps a cowMap is split into: a change copies one,
// 1/64 of the entries, so that a change to a table of 10,000 routes does
// not copy maps of 10,000.
const cowParts = 64

var cowSeed = maphash.MakeSeed()

// cowMap is a map by string split into parts that copies of it share until
// one of them writes to a part (copy on write). The zero value is empty.
// A map that was cloned must not be written to again: tables are
// immutable once built, and a new one writes only to its own clone.
type cowMap[V any] struct {
	parts [cowParts]map[string]V
	// owned are the parts this map made itself and may write in place.
	owned [cowParts]bool
	n     int
}

func cowPart(k string) int { return int(maphash.String(cowSeed, k) % cowParts) }

func (m *cowMap[V]) get(k string) (V, bool) {
	v, ok := m.parts[cowPart(k)][k]
	return v, ok
}

func (m *cowMap[V]) own(i int) map[string]V {
	if !m.owned[i] {
		p := maps.Clone(m.parts[i])
		if p == nil {
			p = make(map[string]V)
		}
		m.parts[i], m.owned[i] = p, true
	}
	return m.parts[i]
}

func (m *cowMap[V]) set(k string, v V) {
	p := m.own(cowPart(k))
	if _, ok := p[k]; !ok {
		m.n++
	}
	p[k] = v
}

func (m *cowMap[V]) del(k string) {
	i := cowPart(k)
	if _, ok := m.parts[i][k]; !ok {
		return
	}
	delete(m.own(i), k)
	m.n--
}

// clone is a copy of m sharing its parts; m is not to be written to
// afterwards.
func (m *cowMap[V]) clone() *cowMap[V] {
	m.owned = [cowParts]bool{}
	return &cowMap[V]{parts: m.parts, n: m.n}
}

func (m *cowMap[V]) len() int { return m.n }

// all yields every entry, in no particular order.
func (m *cowMap[V]) all() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, p := range m.parts {
			for k, v := range p {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// keys are the keys, in no particular order.
func (m *cowMap[V]) keys() []string {
	out := make([]string, 0, m.n)
	for k := range m.all() {
		out = append(out, k)
	}
	return out
}
