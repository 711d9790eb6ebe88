package stack

import (
	"fmt"
	"path/filepath"

	"keyway.dev/internal/ctlconfig"
)

// DevContext is the keywayctl context the stack writes.
const DevContext = "keyway-dev"

// devContext is the keywayctl context for the stack: its services' URLs,
// the CA of their API certificates, and the operator identity, all in
// <data>/pki.
func devContext(cfg Config, data string) ctlconfig.Context {
	pki := filepath.Join(data, "pki")
	return ctlconfig.Context{
		Name:          DevContext,
		Server:        "https://" + cfg.PolicyAddr,
		SecretsServer: "https://" + cfg.SecretsAddr,
		CA:            filepath.Join(pki, "api-ca.crt"),
		Cert:          filepath.Join(pki, "operator.crt"),
		Key:           filepath.Join(pki, "operator.key"),
	}
}

// writeContext merges the stack's context into keywayctl's config file
// (cfg.KeywayctlConfig), as kind writes kubeconfig: the file's other
// contexts are kept, and keyway-dev becomes the current context only when
// none is, so that a user's choice stands. It returns the banner's line
// saying what it did, and the keywayctl flags that select the context
// whichever is current, for the stack's own keywayctl commands (so that a
// user's current context, and its token, never reach the dev stack). An
// empty cfg.KeywayctlConfig writes nothing.
func writeContext(cfg Config, data string) (note string, ctlArgs []string, err error) {
	if cfg.KeywayctlConfig == "" {
		return "", nil, nil
	}
	current, err := ctlconfig.Upsert(cfg.KeywayctlConfig, devContext(cfg, data), false)
	if err != nil {
		return "", nil, err
	}
	ctlArgs = []string{"--keywayconfig", cfg.KeywayctlConfig, "--context", DevContext}
	if current == DevContext {
		return fmt.Sprintf("\nkeywayctl: wrote context %s to %s; it is the current context.\n", DevContext, cfg.KeywayctlConfig), ctlArgs, nil
	}
	return fmt.Sprintf("\nkeywayctl: wrote context %s to %s; the current context stays %s (keywayctl config use-context %s, or --context %s, uses this stack).\n",
		DevContext, cfg.KeywayctlConfig, current, DevContext, DevContext), ctlArgs, nil
}
