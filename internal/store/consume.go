package store

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go/jetstream"
)

// ConsumeErrors logs what a JetStream consumption reports (missed
// heartbeats, a consumer leader change, a lost connection): the consumption
// recovers from these by itself, and the log says when it had to.
func ConsumeErrors(log logr.Logger, what string, kv ...any) jetstream.PullConsumeOpt {
	return jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Info("JetStream consumption reported an error", append([]any{"consumer", what, "error", err.Error()}, kv...)...)
	})
}

// KeepConsuming keeps a consumption running until ctx is done, then stops
// it. Should it end by itself (its consumer lost with a NATS node, say), it
// is started again with start, every second until that works. Messages
// handed out and not acknowledged come again after their ack wait.
func KeepConsuming(ctx context.Context, log logr.Logger, what string, cc jetstream.ConsumeContext, start func() (jetstream.ConsumeContext, error)) {
	for {
		select {
		case <-ctx.Done():
			cc.Stop()
			return
		case <-cc.Closed():
		}
		log.Info("JetStream consumption ended; starting it again", "consumer", what)
		for {
			next, err := start()
			if err == nil {
				cc = next
				break
			}
			log.Error(err, "Restarting a JetStream consumption", "consumer", what)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return
			}
		}
	}
}

// WaitAcks waits for JetStream's acknowledgement of every asynchronous
// publish in futures: it returns the first error, or ctx's when ctx is done
// first, and nil once all were acknowledged.
func WaitAcks(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
