// Command kubectl-webhook is the kubectl plugin of the WA Blast webhook
// operator. Put it on PATH and run it as "kubectl webhook ..."; see
// docs/kubectl-plugin.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/wablast/webhook-operator/internal/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	code := plugin.Execute(ctx, plugin.NewRootCommand(streams), streams.ErrOut)
	stop()
	os.Exit(code)
}
