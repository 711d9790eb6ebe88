package revocation_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"keyway.dev/internal/devca"
	"keyway.dev/internal/revocation"
)

// A CA revokes one of two certificates; a hard-fail checker reads its CRL
// from a file and answers for both.
func Example() {
	ca, _ := devca.New("Example CA")
	alice, _ := ca.Issue(devca.Options{CommonName: "alice"})
	bob, _ := ca.Issue(devca.Options{CommonName: "bob"})
	crl, _ := ca.CRL(devca.CRLOptions{Revoked: []x509.RevocationListEntry{
		{SerialNumber: bob.Cert.SerialNumber, RevocationTime: time.Now(), ReasonCode: int(revocation.KeyCompromise)},
	}})
	dir, _ := os.MkdirTemp("", "crl")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ca.crl")
	_ = os.WriteFile(path, crl, 0o600)

	cache := revocation.NewCache(revocation.Options{})
	defer cache.Close()
	checker, err := cache.Checker(revocation.Policy{
		Mode:    revocation.HardFail,
		CRLs:    []string{path},
		Issuers: []*x509.Certificate{ca.Cert},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer checker.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = checker.Ready(ctx) // the first fetch, at load

	for _, kp := range []*devca.KeyPair{alice, bob} {
		s := checker.Check(kp.Cert, ca.Cert)
		fmt.Println(kp.Cert.Subject.CommonName, s.Result, checker.Allows(s))
	}
	fmt.Println(checker.Check(bob.Cert, ca.Cert).Reason)
	// Output:
	// alice good true
	// bob revoked false
	// keyCompromise
}
