package store

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go/jetstream"
)

// A consumption whose consumer goes away (deleted here; lost with a NATS
// node in production) is started again, and messages keep flowing.
func TestKeepConsumingStartsAnEndedConsumptionAgain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := Open(ctx, Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	js := st.JetStream()
	got := make(chan string, 16)
	starts := 0
	start := func() (jetstream.ConsumeContext, error) {
		starts++
		cons, err := js.CreateOrUpdateConsumer(ctx, StreamOutcomes, jetstream.ConsumerConfig{Durable: "keep-test", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			return nil, err
		}
		return cons.Consume(func(m jetstream.Msg) {
			// Acknowledged for sure before it counts as received: an ack
			// still in flight when the consumer is deleted leaves the
			// message in the work queue, and the next consumer gets it again.
			_ = m.DoubleAck(ctx)
			got <- string(m.Data())
		})
	}
	cc, err := start()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		KeepConsuming(ctx, logr.Discard(), "test", cc, start)
	}()
	receive := func(want string) {
		t.Helper()
		if _, err := js.Publish(ctx, OutcomeSubject("shop", "crm"), []byte(want)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("got %q, want %q", m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q was not consumed", want)
		}
	}
	receive("before")
	if err := js.DeleteConsumer(ctx, StreamOutcomes, "keep-test"); err != nil {
		t.Fatal(err)
	}
	receive("after")
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("keepConsuming did not return once its context was done")
	}
	if starts < 2 {
		t.Errorf("the consumption was started %d times, want a restart", starts)
	}
}
