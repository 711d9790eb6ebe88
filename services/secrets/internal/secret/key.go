package secret

import (
	"fmt"
	"log/slog"
)

// redacted is what a PrivateKey shows wherever it is printed, logged or
// encoded.
const redacted = "[redacted private key]"

// PrivateKey is a PEM private key that redacts itself: fmt (every verb),
// log/slog, encoding/json and encoding/text all show [redacted private
// key]. Only [PrivateKey.PEM] gives the bytes, for the one place that needs
// them (MaterialService, the backend write).
//
// The bytes sit behind a pointer to an unexported type so that printing a
// struct holding a PrivateKey by reflection (a %+v of an unexported field)
// shows an address, not the key.
type PrivateKey struct {
	k *keyBytes
}

type keyBytes struct{ pem []byte }

// NewPrivateKey wraps PEM key bytes; the slice is copied.
func NewPrivateKey(pem []byte) PrivateKey {
	if len(pem) == 0 {
		return PrivateKey{}
	}
	return PrivateKey{k: &keyBytes{pem: append([]byte(nil), pem...)}}
}

// PEM returns the key bytes. Never log or publish them.
func (k PrivateKey) PEM() []byte {
	if k.k == nil {
		return nil
	}
	return k.k.pem
}

// IsZero reports whether there is no key.
func (k PrivateKey) IsZero() bool { return k.k == nil || len(k.k.pem) == 0 }

// Equal reports whether two keys hold the same bytes.
func (k PrivateKey) Equal(o PrivateKey) bool { return string(k.PEM()) == string(o.PEM()) }

// String implements fmt.Stringer.
func (k PrivateKey) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (k PrivateKey) GoString() string { return redacted }

// Format implements fmt.Formatter, so that no verb (%x, %q, %+v) reaches
// the bytes.
func (k PrivateKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue implements slog.LogValuer.
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON implements json.Marshaler.
func (k PrivateKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (k PrivateKey) MarshalText() ([]byte, error) { return []byte(redacted), nil }
