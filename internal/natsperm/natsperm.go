// Package natsperm is the one statement of what each of Keyway's NATS users
// may publish and subscribe to. The development stack's embedded server,
// the test harness's nats-server and the configuration files in deploy/ are
// all made from it (deploy/ is checked against [Render] by a test), so the
// three cannot drift apart.
//
// The package holds data and text only; it does not depend on the server.
//
// What each user may do, in the terms of JetStream's API:
//
//   - policy: create and write the configuration bucket; read (get, watch,
//     history) it, the node registry and the secret versions; create the
//     node registry when it is missing (a node may be later); write the
//     audit stream; publish expiry events of its own certificates (that one
//     subject, [certevents.Subject]).
//   - secrets: create and write the secret-versions bucket and the bucket
//     of its replicas' PKI leader lease; read the configuration bucket (to
//     refuse deleting a secret that resources use); write the audit
//     stream; publish expiry events of its own certificates ([certevents.Subject]).
//   - node: read the configuration bucket and the secret versions; create
//     the node registry and write status keys into it; publish certificate
//     expiry events (that one subject, [certevents.Subject]). It needs no consumer
//     on the registry, so it may create none there: a consumer's deliver
//     subject is not checked against its creator's publish permissions.
//
// Every user subscribes only under its own inbox prefix
// ([keyway.dev/internal/natsconn.InboxPrefix]): JetStream API replies and the
// watches' deliveries come there, and no user reads another's.
package natsperm

import (
	"cmp"
	"fmt"
	"strings"

	"keyway.dev/internal/certevents"
	"keyway.dev/internal/configkv"
	"keyway.dev/internal/natsconn"
	"keyway.dev/internal/nodekv"
	"keyway.dev/internal/secretref"
)

// The users, one per service. Every proxy node connects as [Node].
const (
	Policy  = "policy"
	Secrets = "secrets"
	Node    = "node"
)

// The audit trail: the stream the policy and secrets services append to,
// and the subjects it captures.
const (
	AuditStream   = "keyway-audit"
	AuditSubjects = "keyway.audit.>"
)

// Buckets names the KV buckets the permissions are for; an empty name is
// the default bucket.
type Buckets struct {
	Config         string // default configkv.Bucket
	Nodes          string // default nodekv.Bucket
	SecretVersions string // default secretref.Bucket
	SecretsLeader  string // default SecretsLeaderBucket
}

// SecretsLeaderBucket is the bucket of the secrets replicas' PKI leader
// lease (the secrets service's --leader-bucket).
const SecretsLeaderBucket = "keyway-secrets-leader"

// User is a NATS user and the subjects it may use. Publish and Subscribe
// are allow lists: everything else is denied.
type User struct {
	Name      string
	Publish   []string
	Subscribe []string
}

// Users are Keyway's three users for the given buckets, in the order
// policy, secrets, node.
func Users(b Buckets) []User {
	cfg := cmp.Or(b.Config, configkv.Bucket)
	nodes := cmp.Or(b.Nodes, nodekv.Bucket)
	versions := cmp.Or(b.SecretVersions, secretref.Bucket)
	lease := cmp.Or(b.SecretsLeader, SecretsLeaderBucket)
	return []User{
		{
			Name:      Policy,
			Publish:   join(account(), writeKV(cfg), readKV(nodes), createKV(nodes), readKV(versions), audit(), readAudit(), []string{certevents.Subject}),
			Subscribe: inbox(Policy),
		},
		{
			Name:      Secrets,
			Publish:   join(account(), writeKV(versions), writeKV(lease), readKV(cfg), audit(), []string{certevents.Subject}),
			Subscribe: inbox(Secrets),
		},
		{
			Name:      Node,
			Publish:   join(account(), readKV(cfg), readKV(versions), createKV(nodes), getKV(nodes), putKV(nodes), []string{certevents.Subject}),
			Subscribe: inbox(Node),
		},
	}
}

// api is a JetStream API subject.
func api(s string) string { return "$JS.API." + s }

// account: JetStream's account information (limits and usage; the client
// asks when it opens a bucket).
func account() []string { return []string{api("INFO")} }

// getKV: stream information and single reads (direct and through the
// stream), without consumers.
func getKV(bucket string) []string {
	stream := "KV_" + bucket
	return []string{
		api("STREAM.INFO." + stream),
		api("STREAM.MSG.GET." + stream),
		api("DIRECT.GET." + stream),
		api("DIRECT.GET." + stream + ".>"),
	}
}

// readKV: getKV, and the ordered consumers of watches, history and key
// listings (create with or without a filter, information, delete, flow
// control replies and acknowledgements).
func readKV(bucket string) []string {
	stream := "KV_" + bucket
	return append(getKV(bucket),
		api("CONSUMER.CREATE."+stream),
		api("CONSUMER.CREATE."+stream+".>"),
		api("CONSUMER.INFO."+stream+".>"),
		api("CONSUMER.DELETE."+stream+".>"),
		"$JS.FC."+stream+".>",
		"$JS.ACK."+stream+".>",
	)
}

// createKV: create the bucket when it is missing.
func createKV(bucket string) []string {
	return []string{api("STREAM.INFO.KV_" + bucket), api("STREAM.CREATE.KV_" + bucket)}
}

// putKV: put and delete keys (a KV delete is a message with a header).
func putKV(bucket string) []string { return []string{"$KV." + bucket + ".>"} }

// writeKV: create, update (its settings), read and write the bucket.
func writeKV(bucket string) []string {
	return join(readKV(bucket), createKV(bucket), []string{api("STREAM.UPDATE.KV_" + bucket)}, putKV(bucket))
}

// audit: create the audit stream and append to it.
func audit() []string {
	return []string{
		api("STREAM.INFO." + AuditStream),
		api("STREAM.CREATE." + AuditStream),
		api("STREAM.UPDATE." + AuditStream),
		AuditSubjects,
	}
}

// readAudit: read the audit stream's records one by one (keywayctl audit,
// through the policy service).
func readAudit() []string { return []string{api("STREAM.MSG.GET." + AuditStream)} }

func inbox(user string) []string { return []string{natsconn.InboxPrefix(user) + ".>"} }

// join concatenates subject lists, keeping the first of duplicates.
func join(lists ...[]string) []string {
	seen := make(map[string]bool)
	var out []string
	for _, l := range lists {
		for _, s := range l {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out
}

// PasswordVar is the environment variable deploy/'s configuration files
// read a user's password from: NATS_POLICY_PASSWORD, NATS_SECRETS_PASSWORD,
// NATS_NODE_PASSWORD.
func PasswordVar(user string) string {
	return "NATS_" + strings.ToUpper(user) + "_PASSWORD"
}

// EnvPassword is a password for [Render] that the server reads from the
// user's [PasswordVar] when it loads the file.
func EnvPassword(user string) string { return "$" + PasswordVar(user) }

// Render is the nats-server configuration block granting users their
// permissions:
//
//	authorization {
//	  users = [ … ]
//	}
//
// password gives each user's password as a configuration value: a quoted
// string (fmt's %q of a password of letters and digits), or
// [EnvPassword].
func Render(users []User, password func(user string) string) string {
	var b strings.Builder
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range users {
		fmt.Fprintf(&b, "    {\n      user: %s\n      password: %s\n      permissions: {\n", u.Name, password(u.Name))
		writeList(&b, "publish", u.Publish)
		writeList(&b, "subscribe", u.Subscribe)
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func writeList(b *strings.Builder, name string, subjects []string) {
	fmt.Fprintf(b, "        %s: {\n          allow: [\n", name)
	for _, s := range subjects {
		fmt.Fprintf(b, "            %q\n", s)
	}
	b.WriteString("          ]\n        }\n")
}
