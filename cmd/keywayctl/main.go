// Command keywayctl applies, validates, reads and deletes Keyway's
// declarative resources through the policy service.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"keyway.dev/keywayctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		os.Exit(1) // run has printed the error
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Run(ctx, args, cli.IO{
		Stdin:  os.Stdin,
		Stdout: stdout,
		Stderr: stderr,
		Getenv: os.Getenv,
	})
}
