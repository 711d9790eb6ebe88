package model

import (
	"fmt"
	"strings"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// policies are the policy names a binding may refer to.
var policies = []string{PolicyTLSOutbound, PolicyTLSInbound, FlexPolicyTLS}

// binding builds a Binding from its spec; at is the path of the spec.
func (c *checker) binding(at fieldPath, name string, spec *policyv1.PolicyBindingSpec) *Binding {
	b := &Binding{Name: name}

	b.Policy = spec.GetPolicyRef().GetName()
	// The kind of resource the policy attaches to.
	targetKind := KindService
	switch b.Policy {
	case PolicyTLSOutbound:
		b.Outbound = c.outboundTLS(at.Child("config"), spec.GetConfig())
	case PolicyTLSInbound, FlexPolicyTLS:
		b.Policy = PolicyTLSInbound
		targetKind = KindListener
		b.Inbound = c.inboundTLS(at.Child("config"), spec.GetConfig())
	case "":
		c.errorf(at.Child("policyRef").Child("name"), "policyRef.name is required; supported policies: %s", quoteList(policies))
	default:
		msg := fmt.Sprintf("policy %q is not supported; supported policies: %s", b.Policy, quoteList(policies))
		if s := DidYouMean(b.Policy, policies); s != "" {
			msg += fmt.Sprintf(": did you mean %q?", s)
		}
		c.errorf(at.Child("policyRef").Child("name"), "%s", msg)
	}

	target := spec.GetTargetRef()
	what := "the Service the upstream is declared as"
	if targetKind == KindListener {
		what = "the Listener whose port this TLS context serves"
	}
	switch {
	case target == nil:
		c.errorf(at.Child("targetRef"), "targetRef is required: set targetRef: {kind: %s, name: <%s name>}", targetKind, strings.ToLower(targetKind))
	default:
		// An empty kind means the policy's kind.
		if k := target.GetKind(); k != "" && k != targetKind {
			c.errorf(at.Child("targetRef").Child("kind"), "targetRef.kind %q does not take %s bindings; %s attaches to a %s: set kind: %s and name %s", k, b.Policy, b.Policy, targetKind, targetKind, what)
		}
		b.Target = Ref{Kind: targetKind, Name: target.GetName()}
		if b.Target.Name == "" {
			c.errorf(at.Child("targetRef").Child("name"), "targetRef.name is required: name %s", what)
		}
	}
	return b
}

// bindingsPerService reports a Service that would get two bindings of the
// same policy, counting stored bindings that the request does not replace.
func (c *checker) bindingsPerService(entries []built, stored Catalog) {
	type owner struct {
		name   string
		stored bool
	}
	replaced := make(map[string]bool)
	for _, e := range entries {
		if e.obj.Binding != nil {
			replaced[e.obj.Binding.Name] = true
		}
	}
	owners := make(map[[2]string]owner) // (policy, service) → binding
	for _, b := range stored.Bindings() {
		if !replaced[b.Name] && b.Policy == PolicyTLSOutbound {
			owners[[2]string{b.Policy, b.Target.Name}] = owner{b.Name, true}
		}
	}
	for _, e := range entries {
		b := e.obj.Binding
		if b == nil || b.Policy != PolicyTLSOutbound || b.Target.Name == "" {
			continue
		}
		key := [2]string{b.Policy, b.Target.Name}
		if o, taken := owners[key]; taken && o.name != b.Name {
			where := "in this request"
			if o.stored {
				where = "stored"
			}
			c.errorf(e.at.Child("spec").Child("targetRef").Child("name"),
				"Service %q already has %s binding %q (%s); a Service takes one %s binding: change that one instead, or delete it first",
				b.Target.Name, b.Policy, o.name, where, b.Policy)
			continue
		}
		owners[key] = owner{b.Name, false}
	}
}

// quoteList formats names as "a", "b", "c".
func quoteList(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%q", n)
	}
	return s
}
