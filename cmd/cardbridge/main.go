// Command cardbridge issues MBanq virtual debit cards for employees on
// request from an ERP over NATS JetStream. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cardbridge/cardbridge/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
