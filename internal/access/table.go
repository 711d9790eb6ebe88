package access

import (
	"strings"

	"keyway.dev/gen/keyway/policy/v1/policyv1connect"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"
)

// Rule says who may call one path.
type Rule struct {
	// Open paths answer anyone, without a credential (health probes).
	Open bool
	// Role is what the caller needs ([Role.grants]); empty with Open
	// unset: any authenticated caller (reflection).
	Role Role
}

// Table maps request paths to rules. A key ending in "/" covers every path
// under it; the longest key that covers a path wins. A path no key covers
// is refused to everyone (fail closed): a procedure added to a service is
// unreachable until its table names it.
type Table map[string]Rule

// Lookup is the rule of path, and whether the table covers it.
func (t Table) Lookup(path string) (Rule, bool) {
	if r, ok := t[path]; ok {
		return r, true
	}
	best, found := "", false
	for k := range t {
		if strings.HasSuffix(k, "/") && strings.HasPrefix(path, k) && len(k) > len(best) {
			best, found = k, true
		}
	}
	if !found {
		return Rule{}, false
	}
	return t[best], true
}

// Paths every API serves alike.
const (
	// HealthPrefix is gRPC health: open to orchestrators.
	HealthPrefix = "/grpc.health.v1.Health/"
	// HealthzPath is the plain health probe: open.
	HealthzPath = "/healthz"
	// MetricsPath is Prometheus's: viewer.
	MetricsPath = "/metrics"
	// ReflectionV1Prefix and ReflectionV1AlphaPrefix are gRPC reflection
	// (so that buf curl needs no schema): any authenticated caller.
	ReflectionV1Prefix      = "/grpc.reflection.v1.ServerReflection/"
	ReflectionV1AlphaPrefix = "/grpc.reflection.v1alpha.ServerReflection/"
	// PprofPrefix is Go's profiler on a node's admin port: operator, and
	// only when --pprof turns it on.
	PprofPrefix = "/debug/pprof/"
	// StatusPath is a node's /status: viewer.
	StatusPath = "/status"
)

func base() Table {
	return Table{
		HealthPrefix:            {Open: true},
		HealthzPath:             {Open: true},
		ReflectionV1Prefix:      {},
		ReflectionV1AlphaPrefix: {},
		MetricsPath:             {Role: Viewer},
	}
}

// PolicyAPI is the policy service's table: reads for viewer, writes for
// operator.
func PolicyAPI() Table {
	t := base()
	for _, p := range []string{
		policyv1connect.PolicyServiceGetProcedure,
		policyv1connect.PolicyServiceListProcedure,
		policyv1connect.PolicyServiceListNodesProcedure,
		policyv1connect.PolicyServiceGetRolloutProcedure,
		policyv1connect.PolicyServiceWatchRolloutProcedure,
		policyv1connect.PolicyServiceHistoryProcedure,
		policyv1connect.PolicyServiceListAuditProcedure,
	} {
		t[p] = Rule{Role: Viewer}
	}
	for _, p := range []string{
		policyv1connect.PolicyServiceApplyProcedure,
		policyv1connect.PolicyServiceDeleteProcedure,
		policyv1connect.PolicyServiceRollbackProcedure,
	} {
		t[p] = Rule{Role: Operator}
	}
	return t
}

// SecretsAPI is the secrets service's API table: descriptions for viewer,
// writes for secrets-admin. MaterialService is not in it: it is served on
// the internal port only ([MaterialAPI]).
func SecretsAPI() Table {
	t := base()
	for _, p := range []string{
		secretsv1connect.SecretsServiceGetAliasProcedure,
		secretsv1connect.SecretsServiceGetTruststoreProcedure,
		secretsv1connect.SecretsServiceListKeystoresProcedure,
		secretsv1connect.SecretsServiceListTruststoresProcedure,
	} {
		t[p] = Rule{Role: Viewer}
	}
	for _, p := range []string{
		secretsv1connect.SecretsServicePutAliasProcedure,
		secretsv1connect.SecretsServicePutTruststoreProcedure,
		secretsv1connect.SecretsServiceDeleteAliasProcedure,
		secretsv1connect.SecretsServiceDeleteTruststoreProcedure,
	} {
		t[p] = Rule{Role: SecretsAdmin}
	}
	return t
}

// MaterialAPI is the secrets service's internal port: key material for
// the node role alone.
func MaterialAPI() Table {
	return Table{
		secretsv1connect.MaterialServiceFetchAliasProcedure:      {Role: Node},
		secretsv1connect.MaterialServiceFetchTruststoreProcedure: {Role: Node},
	}
}

// NodeAdmin is a proxy node's admin port: /healthz open, /status and
// /metrics for viewer, and with pprof Go's profiler for operator.
func NodeAdmin(pprof bool) Table {
	t := Table{
		HealthzPath: {Open: true},
		StatusPath:  {Role: Viewer},
		MetricsPath: {Role: Viewer},
	}
	if pprof {
		t[PprofPrefix] = Rule{Role: Operator}
	}
	return t
}
