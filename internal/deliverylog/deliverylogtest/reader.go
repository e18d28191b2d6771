// Package deliverylogtest starts delivery log readers for tests.
package deliverylogtest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/deliverylog"
)

// Start opens a reader of the log in js with its index in a temporary
// directory, and keeps the index up to date until the test ends.
func Start(t testing.TB, js jetstream.JetStream) *deliverylog.Reader {
	t.Helper()
	return StartIn(t, js, deliverylog.Options{Dir: t.TempDir()})
}

// StartIn is Start with opts (opts.Dir required); the reader is closed
// when the test ends.
func StartIn(t testing.TB, js jetstream.JetStream, opts deliverylog.Options) *deliverylog.Reader {
	t.Helper()
	r, err := deliverylog.Open(js, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Start(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = r.Close()
	})
	return r
}
