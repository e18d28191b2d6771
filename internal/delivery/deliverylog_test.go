package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// logMessages returns the delivery log's messages of one delivery, each
// decoded into its records.
func logMessages(t *testing.T, s *store.Store, ns, name, eventID string) [][]store.LogRecord {
	t.Helper()
	ctx := context.Background()
	cons, err := s.JetStream().OrderedConsumer(ctx, store.StreamDeliveryLog, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{store.DeliveryLogSubject(ns, name, eventID)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]store.LogRecord
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
		if err != nil {
			return out
		}
		rs, err := store.DecodeLogRecords(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rs)
	}
}

func kinds(msgs [][]store.LogRecord) string {
	var s []string
	for _, rs := range msgs {
		k := ""
		for _, r := range rs {
			k += r.Kind + "+"
		}
		s = append(s, k[:len(k)-1])
	}
	return fmt.Sprint(s)
}

// TestADeliveryAttemptedAtOnceIsOneLogMessage: the Stored record of a
// delivery attempted within the hold goes into the log with its attempt,
// as one message (the log's cost on the delivery path is its messages),
// and carries the envelope as posted; a delivery whose attempt takes
// longer than the hold shows as stored (Pending) while it is in flight,
// its attempt following in a message of its own.
func TestADeliveryAttemptedAtOnceIsOneLogMessage(t *testing.T) {
	slow := make(chan struct{})
	rc := newReceiver(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-slow
		}
	})
	var release sync.Once
	unblock := func() { release.Do(func() { close(slow) }) }
	t.Cleanup(unblock) // before the receiver is closed, which waits for its requests
	h := newHarnessWithStore(t, "", nil, store.Options{DeliveryLogRetention: time.Hour})
	h.reg.Upsert(testEndpoint("crm", rc.URL))
	h.reg.Upsert(testEndpoint("slow", rc.URL+"/slow"))

	events := make([]Event, 20)
	for i := range events {
		events[i] = testEvent(i)
	}
	h.enqueue(events[:10]...)
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(rc.uniqueIDs()); n < 10 {
			return fmt.Errorf("%d of 10 delivered", n)
		}
		return nil
	})
	for _, ev := range events[:10] {
		var msgs [][]store.LogRecord
		testutil.Eventually(t, 5*time.Second, func() error {
			msgs = logMessages(t, h.store, "shop", "crm", ev.ID)
			if len(msgs) == 0 {
				return fmt.Errorf("no log message for %s", ev.ID)
			}
			return nil
		})
		if k := kinds(msgs); k != "[Stored+Attempt]" {
			t.Fatalf("%s: log messages %s, want one with both records", ev.ID, k)
		}
		st, at := msgs[0][0], msgs[0][1]
		var env struct {
			Type string `json:"type"`
			Data any    `json:"data"`
		}
		var posted any
		if err := json.Unmarshal(st.Body, &env); err != nil || env.Type != ev.Type || json.Unmarshal(ev.Data, &posted) != nil || !reflect.DeepEqual(env.Data, posted) {
			t.Errorf("%s: the Stored record's envelope %s, posted data %s (%v)", ev.ID, st.Body, ev.Data, err)
		}
		if at.Result != webhooksv1alpha1.ResultSucceeded || at.StatusCode != http.StatusOK || at.EventID != ev.ID {
			t.Errorf("%s: attempt %+v", ev.ID, at)
		}
	}

	// The slow endpoint: stored, shown as such while its attempt hangs.
	slowEv := events[10]
	h.enqueue(slowEv)
	testutil.Eventually(t, 5*time.Second, func() error {
		if k := kinds(logMessages(t, h.store, "shop", "slow", slowEv.ID)); k != "[Stored]" {
			return fmt.Errorf("log messages %s while the attempt is in flight, want [Stored]", k)
		}
		return nil
	})
	unblock()
	testutil.Eventually(t, 10*time.Second, func() error {
		if k := kinds(logMessages(t, h.store, "shop", "slow", slowEv.ID)); k != "[Stored Attempt]" {
			return fmt.Errorf("log messages %s, want [Stored Attempt]", k)
		}
		return nil
	})
	rc.checkAll(t, events[:11]...)
}
