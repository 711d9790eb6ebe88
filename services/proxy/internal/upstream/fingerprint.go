package upstream

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
)

func certFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
