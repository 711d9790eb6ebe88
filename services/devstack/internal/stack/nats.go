package stack

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"keyway.dev/internal/devca"
	"keyway.dev/internal/natsperm"
)

// devNATS is the embedded NATS server's security: TLS with a certificate
// of the internal CA for loopback, and the users of package natsperm, each
// with a password made at this start.
type devNATS struct {
	caFile string
	// passwordFiles holds each user's password file (0600, in the data
	// folder).
	passwordFiles map[string]string
	tls           *tls.Config
	users         []*natsserver.User
}

// secureNATS issues the server's certificate from the internal CA and
// writes a new random password per user into <data>/nats-users.
func secureNATS(data string, p *pki) (*devNATS, error) {
	kp, err := p.internalCA.Issue(devca.Options{CommonName: "keyway-nats", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, NotAfter: time.Now().Add(90 * 24 * time.Hour)})
	if err != nil {
		return nil, fmt.Errorf("issuing the NATS server certificate: %w", err)
	}
	dir := filepath.Join(data, "nats-users")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making %s: %w", dir, err)
	}
	d := &devNATS{
		caFile:        p.internalCAFile,
		passwordFiles: make(map[string]string),
		tls:           &tls.Config{Certificates: []tls.Certificate{kp.TLS}, MinVersion: tls.VersionTLS12},
	}
	for _, u := range natsperm.Users(natsperm.Buckets{}) {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		pw := hex.EncodeToString(b)
		file := filepath.Join(dir, u.Name+".password")
		if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("writing the NATS password of %s: %w", u.Name, err)
		}
		d.passwordFiles[u.Name] = file
		d.users = append(d.users, &natsserver.User{
			Username: u.Name,
			Password: pw,
			Permissions: &natsserver.Permissions{
				Publish:   &natsserver.SubjectPermission{Allow: u.Publish},
				Subscribe: &natsserver.SubjectPermission{Allow: u.Subscribe},
			},
		})
	}
	return d, nil
}

// apply makes opts serve TLS only, to the users only.
func (d *devNATS) apply(opts *natsserver.Options) {
	opts.TLSConfig = d.tls
	opts.TLS = true
	opts.TLSTimeout = 2
	opts.Users = d.users
}

// args are the flags that connect a service as user.
func (d *devNATS) args(user string) []string {
	return []string{"--nats-ca", d.caFile, "--nats-user", user, "--nats-password-file", d.passwordFiles[user]}
}
