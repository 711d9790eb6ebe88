// Package cli is keywayctl's command tree: apply, validate, get and delete,
// each a thin layer over one PolicyService call.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/gen/keyway/policy/v1/policyv1connect"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/version"
)

// DefaultServer is the policy service's address under `make run`.
const DefaultServer = "https://127.0.0.1:8081"

// ServerEnv names the environment variable that overrides [DefaultServer].
const ServerEnv = "KEYWAY_SERVER"

// IO is what a run reads and writes, so that tests run commands in process.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment; nil reads nothing.
	Getenv func(string) string
	// Now is the clock for ages and expiry; nil is time.Now.
	Now func() time.Time
}

// Run runs keywayctl with args (without the program name). Errors are
// printed to Stderr as "error: …" lines before being returned, so a caller
// only has to set the exit status.
func Run(ctx context.Context, args []string, io IO) error {
	if io.Getenv == nil {
		io.Getenv = func(string) string { return "" }
	}
	if io.Now == nil {
		io.Now = time.Now
	}
	root := newRoot(&io)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil {
		printError(io.Stderr, err)
	}
	return err
}

// printError prints each of a joined error's errors on its own line.
func printError(w io.Writer, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printError(w, e)
		}
		return
	}
	fmt.Fprintf(w, "error: %v\n", err)
}

// globals are the flags every command shares.
type globals struct {
	// conn chooses the config file, the context and the credentials.
	conn connFlags

	io       *IO
	server   string
	protocol string
	timeout  time.Duration
	// creds are used for the policy and the secrets services alike.
	creds credentials
}

func newRoot(io *IO) *cobra.Command {
	g := &globals{io: io}
	server := io.Getenv(ServerEnv)
	if server == "" {
		server = DefaultServer
	}
	root := &cobra.Command{
		Use:   "keywayctl",
		Short: "Apply and inspect Keyway gateway configuration",
		Long: `keywayctl talks to Keyway's policy service: it applies Services, Routes and
PolicyBindings from YAML or JSON manifests, validates them without storing
anything, and reads and deletes what is stored.`,
		Example: `  keywayctl apply -f orders.yaml
  keywayctl validate -f deploy/
  keywayctl get bindings
  keywayctl get service orders -o yaml
  keywayctl delete policybinding orders-mtls
  keywayctl apply -f orders.yaml --wait
  keywayctl status
  keywayctl history service orders
  keywayctl rollback service orders --to-revision 12`,
		// The command's span (when OTEL_* turns tracing on) is named for
		// the command: "keywayctl apply", "keywayctl secrets put".
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			trace.SpanFromContext(cmd.Context()).SetName(cmd.CommandPath())
			g.conn.running = cmd
		},
		SilenceErrors: true,
		SilenceUsage:  true,
		// --version: cobra answers it before any other flag is used and
		// before PersistentPreRun, so no configuration is read.
		Version: version.String("keywayctl"),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetIn(io.Stdin)
	root.SetOut(io.Stdout)
	root.SetErr(io.Stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w\nSee '%s --help' for usage.", err, cmd.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", server, "policy service URL (env "+ServerEnv+")")
	pf.StringVar(&g.protocol, "protocol", "connect", "RPC protocol: connect or grpc")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "time limit for each request; 0 for none")
	g.creds.register(pf, io.Getenv)

	g.conn.register(pf) // after every other global flag: it defines only the missing ones
	root.AddCommand(
		newApplyCommand(g, false),
		newApplyCommand(g, true),
		newGetCommand(g),
		newDeleteCommand(g),
		newStatusCommand(g),
		newCertsCommand(g),
		newSecretsCommand(g),
		newImportCommand(g),
		newHistoryCommand(g),
		newRollbackCommand(g),
		newAuditCommand(g),
		newConfigCommand(g),
		newVersionCommand(),
	)
	return root
}

// client connects to the policy service with the protocol asked for.
func (g *globals) client() (policyv1connect.PolicyServiceClient, error) {
	s, err := g.settings()
	if err != nil {
		return nil, err
	}
	base, hc, opts, err := connection(s.source(settingServer.flag), s.Server, DefaultServer, g.protocol, s)
	if err != nil {
		return nil, err
	}
	g.server = base
	return policyv1connect.NewPolicyServiceClient(hc, base, opts...), nil
}

// connection checks a service URL given by flag (scheme https:// when it
// has none) and makes the HTTP client and Connect options for protocol:
// connect, or grpc, which needs HTTP/2, negotiated by ALPN over TLS and
// spoken without a prior upgrade (h2c) over plain HTTP, as Keyway's
// services serve it with --insecure-no-auth. Over https, TLS and the bearer
// token are as tlsClient makes them from s. Requests carry the command's
// trace context.
func connection(flag, raw, example, protocol string, s connSettings) (base string, hc *http.Client, opts []connect.ClientOption, err error) {
	base = raw
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", nil, nil, fmt.Errorf("%s %q: want a URL such as %s", flag, raw, example)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	var token string
	if u.Scheme == "https" {
		if transport.TLSClientConfig, token, err = tlsClient(s, protocol); err != nil {
			return "", nil, nil, err
		}
	} else if s.Token != "" || s.TokenFile != "" {
		// Plain HTTP (a service with --insecure-no-auth) has no use for
		// the TLS settings, but a token would cross the network in clear.
		return "", nil, nil, fmt.Errorf("%s %s: a bearer token would cross the network in the clear; use an https:// URL", flag, raw)
	}
	switch protocol {
	case "connect":
	case "grpc":
		var p http.Protocols
		p.SetHTTP2(true)
		p.SetUnencryptedHTTP2(true)
		transport.Protocols = &p
		opts = append(opts, connect.WithGRPC())
	default:
		return "", nil, nil, fmt.Errorf("--protocol %q: want connect or grpc", protocol)
	}
	var rt http.RoundTripper = transport
	if token != "" {
		rt = bearerToken{token: token, next: rt}
	}
	return base, &http.Client{Transport: traceparent{rt}}, opts, nil
}

// traceparent adds the trace context of the request's context (the
// command's span, when OTEL_* turns tracing on) to each request, so that the
// service's spans join the command's trace. Without a span it adds nothing.
type traceparent struct{ next http.RoundTripper }

func (t traceparent) RoundTrip(r *http.Request) (*http.Response, error) {
	if trace.SpanContextFromContext(r.Context()).IsValid() {
		r = r.Clone(r.Context()) // a RoundTripper must not modify the request
		otel.GetTextMapPropagator().Inject(r.Context(), propagation.HeaderCarrier(r.Header))
	}
	return t.next.RoundTrip(r)
}

// withTimeout bounds one request by --timeout.
func (g *globals) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if g.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, g.timeout)
}

// rpcError turns a failed call into an error that says what to do; what
// says what was being done ("getting service/orders").
func (g *globals) rpcError(err error, what string) error {
	// what may hold a name from the command line: echo a prefix only.
	what = limits.Value(what)
	switch code := connect.CodeOf(err); {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s: cannot connect to %s: is the policy service running? (make run starts it; --server or %s points elsewhere)", what, g.server, ServerEnv)
	case code == connect.CodeDeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no answer from %s within %s: is the policy service running there? (--timeout sets the limit)", what, g.server, g.timeout)
	case code == connect.CodeCanceled:
		return fmt.Errorf("%s: interrupted", what)
	case code == connect.CodeUnimplemented:
		return fmt.Errorf("%s: %s does not serve keyway.policy.v1.PolicyService: is --server the policy service's URL?", what, g.server)
	}
	if aerr := authError(err, what, "the policy service", g.server); aerr != nil {
		return aerr
	}
	if ce := new(connect.Error); errors.As(err, &ce) {
		return fmt.Errorf("%s: %s (%s)", what, ce.Message(), ce.Code())
	}
	return fmt.Errorf("%s: %w", what, err)
}
