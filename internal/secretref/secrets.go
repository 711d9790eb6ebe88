package secretref

import (
	"context"
	"fmt"

	"keyway.dev/internal/certs"
)

// Secrets is what validation asks the secrets service about references. The
// policy service implements it with a SecretsService client. Methods must be
// safe for concurrent use. A missing keystore, alias or truststore is a
// [*NotFoundError]; any other error means the secrets service could not
// answer, and the reference is refused as unchecked.
type Secrets interface {
	// Alias describes an alias of a keystore.
	Alias(ctx context.Context, keystore, alias string) (AliasInfo, error)
	// Truststore describes a truststore.
	Truststore(ctx context.Context, name string) (TruststoreInfo, error)
}

// AliasInfo describes an alias as the secrets service holds it; never its
// key.
type AliasInfo struct {
	Version string
	// Chain is the leaf first, then intermediates.
	Chain []certs.Summary
	// Server is set when the alias was stored for use as a server
	// certificate (usage "server"), which the secrets service checked for
	// a SAN.
	Server bool
	// Rejected, when set, says that the backend's newest version was
	// refused by the secrets service, and why; Chain is then the version
	// still served, if any.
	Rejected string
}

// TruststoreInfo describes a truststore.
type TruststoreInfo struct {
	Version      string
	Certificates []certs.Summary
	// Rejected is as AliasInfo.Rejected.
	Rejected string
}

// NotFoundError says that a keystore, an alias or a truststore does not
// exist in the secrets service.
type NotFoundError struct {
	// Kind is "keystore", "alias" or "truststore".
	Kind string
	// Name is the missing name (the alias name for Kind "alias").
	Name string
	// Known lists the names that do exist (the keystore's aliases for an
	// alias), for suggestions; may be empty.
	Known []string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("secretref: %s %q not found", e.Kind, e.Name)
}
