package delivery

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// Every delivery log message the dispatcher writes is handed to the
// FeedDeliveryLog function once stored, with the stream sequence it was
// stored at, its subject and its headers: what the log's fed index
// (deliverylog/fed.go) builds from instead of reading the stream back.
func TestEveryDeliveryLogWriteIsHandedOverWithItsSequence(t *testing.T) {
	type handed struct {
		subject string
		header  nats.Header
	}
	var mu sync.Mutex
	got := map[uint64]handed{}
	rc := newReceiver(t, nil)
	h := newPreparedHarness(t, "", nil, store.Options{DeliveryLogRetention: time.Hour}, func(d *Dispatcher) {
		d.FeedDeliveryLog(func(seq uint64, subject string, hdr nats.Header) {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := got[seq]; dup {
				t.Errorf("sequence %d handed over twice", seq)
			}
			got[seq] = handed{subject, hdr}
		})
	})
	h.reg.Upsert(testEndpoint("crm", rc.URL))
	events := make([]Event, 40)
	for i := range events {
		events[i] = testEvent(i)
	}
	h.enqueue(events[:20]...)
	h.enqueue(events[20:]...)
	ctx := context.Background()
	stream, err := h.store.JetStream().Stream(ctx, store.StreamDeliveryLog)
	if err != nil {
		t.Fatal(err)
	}
	// Each delivery: its Stored record, then its attempt's.
	testutil.Eventually(t, 20*time.Second, func() error {
		info, err := stream.Info(ctx)
		if err != nil {
			return err
		}
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if info.State.Msgs < 80 || uint64(n) != info.State.LastSeq {
			return fmt.Errorf("%d messages in the log (want 80), %d handed over", info.State.Msgs, n)
		}
		return nil
	})
	rc.checkAll(t, events...)
	mu.Lock()
	defer mu.Unlock()
	starts := map[string]int{}
	for seq, hd := range got {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("sequence %d: %v", seq, err)
		}
		id, start := store.LogEventOf(m.Header)
		hid, hstart := store.LogEventOf(hd.header)
		if m.Subject != hd.subject || id != hid || start != hstart || id == "" {
			t.Errorf("sequence %d: handed over %s %q (start %t), stored %s %q (start %t)", seq, hd.subject, hid, hstart, m.Subject, id, start)
		}
		if start {
			starts[id]++
		}
	}
	for _, ev := range events {
		if n := starts[store.EscapeEventID(ev.ID)]; n != 1 {
			t.Errorf("event %s: %d messages starting its delivery handed over, want 1", ev.ID, n)
		}
	}
}
