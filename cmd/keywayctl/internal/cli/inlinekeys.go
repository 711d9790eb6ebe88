package cli

import (
	"fmt"
	"io"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// inlineKeystore is the secrets service's keystore into which the policy
// service moves the private keys applied inline in bindings and Listeners:
// the configuration store holds the reference, never the key.
const inlineKeystore = "keyway-inline"

// movedKeyNotes says, for each certificate of rs that references a moved
// key, where the key went: get's "status note" (on stderr, so that -o yaml
// stays what apply -f reads back).
func movedKeyNotes(w io.Writer, rs []*policyv1.Resource) {
	for _, r := range rs {
		for _, n := range movedKeys(r) {
			fmt.Fprintf(w, "note: %s: the private key applied inline at %s was moved into the secrets service, keystore %q alias %q; the stored resource references it there (keywayctl secrets get --keystore %s --alias %s)\n",
				n.resource, n.field, inlineKeystore, n.alias, inlineKeystore, n.alias)
		}
	}
}

type movedKey struct{ resource, field, alias string }

func movedKeys(r *policyv1.Resource) []movedKey {
	var out []movedKey
	if b := r.GetPolicyBinding(); b != nil {
		f := b.GetSpec().GetConfig().GetFields()["certificate"].GetStructValue().GetFields()
		if f["keystore"].GetStringValue() == inlineKeystore {
			out = append(out, movedKey{"policybinding/" + b.GetMetadata().GetName(), "spec.config.certificate", f["alias"].GetStringValue()})
		}
	}
	if l := r.GetListener(); l != nil {
		for j, h := range l.GetSpec().GetHosts() {
			if kp := h.GetCertificate(); kp.GetKeystore() == inlineKeystore {
				out = append(out, movedKey{"listener/" + l.GetMetadata().GetName(), fmt.Sprintf("spec.hosts[%d].certificate", j), kp.GetAlias()})
			}
		}
	}
	return out
}
