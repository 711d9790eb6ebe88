// Package nodekv is the layout of the node bucket in NATS JetStream KV: each
// proxy node keeps its keyway.node.v1.NodeStatus under "node.<id>" and
// rewrites it on every heartbeat; the bucket's MaxAge drops the key of a
// node that stops heartbeating, so the bucket holds the live nodes. Proxy
// nodes write it; the policy service reads it to answer ListNodes and
// rollout questions.
//
// The certificates a node serves are kept apart, under "certs.<id>", as a
// NodeStatus holding only its id, certificates and the errors of listing
// them: at thousands of upstreams the list is hundreds of kilobytes and
// changes seldom, while the status is written at every configuration
// change. A node writes its certificates key before the status that
// reports the revision they belong to, and rewrites both on every
// heartbeat; [Merge] puts the two back together.
package nodekv

import (
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	nodev1 "keyway.dev/gen/keyway/node/v1"
)

// Bucket is the default name of the node bucket.
const Bucket = "keyway-nodes"

// DefaultHeartbeat is how often a node rewrites its status by default.
const DefaultHeartbeat = 5 * time.Second

// DefaultTTL is the node bucket's MaxAge when it is created with no other
// value: three heartbeats, so one lost heartbeat does not drop a node.
const DefaultTTL = 3 * DefaultHeartbeat

// keyPrefix starts every status key, certsPrefix every certificates key;
// ids must be valid KV key tokens after them.
const (
	keyPrefix   = "node."
	certsPrefix = "certs."
)

// Key is the bucket key of node id.
func Key(id string) string { return keyPrefix + id }

// ID is the inverse of [Key]; ok is false for a key that is not a node's.
func ID(key string) (id string, ok bool) {
	id, ok = strings.CutPrefix(key, keyPrefix)
	return id, ok && id != ""
}

// CertsKey is the bucket key of node id's certificates.
func CertsKey(id string) string { return certsPrefix + id }

// CertsID is the inverse of [CertsKey].
func CertsID(key string) (id string, ok bool) {
	id, ok = strings.CutPrefix(key, certsPrefix)
	return id, ok && id != ""
}

// Merge is a node's status with its certificates (the value of its
// certificates key, nil when there is none): a new status, the two given
// are left as they are.
func Merge(status, certs *nodev1.NodeStatus) *nodev1.NodeStatus {
	if status == nil || len(certs.GetCertificates()) == 0 && len(certs.GetErrors()) == 0 {
		return status
	}
	m := proto.CloneOf(status)
	m.Certificates = append(m.Certificates, certs.GetCertificates()...)
	m.Errors = append(m.Errors, certs.GetErrors()...)
	return m
}

// CheckID says why id cannot name a node in the bucket, or nil: KV keys
// allow letters, digits and "-_=/." only, and the id is one key token.
func CheckID(id string) error {
	if id == "" {
		return fmt.Errorf("nodekv: the node id is empty; give one with --node-id")
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '='
		if !ok {
			return fmt.Errorf("nodekv: node id %q has %q; use letters, digits, '-', '_' or '=' only", id, r)
		}
	}
	return nil
}

// Encode serialises a node's status for the bucket.
func Encode(s *nodev1.NodeStatus) ([]byte, error) {
	b, err := proto.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("nodekv: encoding the status of node %q: %w", s.GetId(), err)
	}
	return b, nil
}

// Decode is the inverse of [Encode].
func Decode(b []byte) (*nodev1.NodeStatus, error) {
	s := new(nodev1.NodeStatus)
	if err := proto.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("nodekv: decoding a node status: %w", err)
	}
	return s, nil
}

// Version is the Keyway version of the running binary: its module version
// when built from a tagged module, else the VCS revision it was built from,
// else "devel".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}
