// Command keywayctl applies, validates, reads and deletes Keyway's
// declarative resources through the policy service.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"keyway.dev/internal/telemetry"
	"keyway.dev/keywayctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := traced(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		os.Exit(1) // the error has been printed
	}
}

// traced runs the command in a span of its own when the OTEL_* variables
// turn tracing on, so that what the command asks of the services joins its
// trace (the requests carry its traceparent).
func traced(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	tracing, shutdown, err := telemetry.Setup(ctx, "keywayctl")
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdown(sctx) // exporting the last spans is best effort at exit
	}()
	if !tracing.On() {
		return run(ctx, args, stdout, stderr)
	}
	// Named "keywayctl" until the command is known (cli names it).
	ctx, span := tracing.Tracer.Start(ctx, "keywayctl", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	err = run(ctx, args, stdout, stderr)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Run(ctx, args, cli.IO{
		Stdin:  os.Stdin,
		Stdout: stdout,
		Stderr: stderr,
		Getenv: os.Getenv,
	})
}
