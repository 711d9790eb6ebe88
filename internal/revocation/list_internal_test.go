package revocation

import (
	"bytes"
	"math/big"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

func TestSerialKey(t *testing.T) {
	t.Parallel()
	huge := new(big.Int).Lsh(big.NewInt(1), 300) // 38 bytes: beyond the buffer
	tests := []struct {
		name string
		n    *big.Int
		want []byte
	}{
		{"zero", big.NewInt(0), []byte{0}},
		{"one", big.NewInt(1), []byte{0, 1}},
		{"leading zero dropped", big.NewInt(0x0100), []byte{0, 1, 0}},
		{"negative", big.NewInt(-5), []byte{1, 5}},
		{"beyond the buffer", huge, append([]byte{0}, huge.Bytes()...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var buf [serialBuf]byte
			if got := serialKey(tc.n, buf[:]); !bytes.Equal(got, tc.want) {
				t.Fatalf("serialKey(%s) = %x, want %x", tc.n, got, tc.want)
			}
		})
	}
	var a, b [serialBuf]byte
	if bytes.Equal(serialKey(big.NewInt(5), a[:]), serialKey(big.NewInt(-5), b[:])) {
		t.Fatal("5 and -5 have the same key")
	}
}

// FuzzIssuingDP feeds the issuing distribution point parser, which reads a
// CRL extension before its scope is trusted: it must not panic, and what it
// accepts names a scope a full, direct list can have.
func FuzzIssuingDP(f *testing.F) {
	build := func(fill func(b *cryptobyte.Builder)) []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, fill)
		return b.BytesOrPanic()
	}
	f.Add(build(func(*cryptobyte.Builder) {}))
	f.Add(build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte("http://ca/part1.crl")) })
			})
		})
		b.AddASN1(cbasn1.Tag(1).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
	}))
	f.Add(build(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(4).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
	}))
	f.Add([]byte{0x30, 0x03, 0x82, 0x01, 0xff})
	f.Fuzz(func(t *testing.T, der []byte) {
		sc, err := parseIssuingDP(der)
		if err != nil {
			return
		}
		if sc.onlyUser && sc.onlyCA {
			// Contradictory, but harmless: it covers nothing.
			return
		}
		for _, p := range sc.points {
			if p == "" && len(sc.points) == 1 {
				return
			}
		}
	})
}
