package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

func TestDedupeSetRemembersKeysForTheWindow(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	d := newDedupeSet(2 * time.Minute)
	d.add(1, clk.Now())
	clk.Step(30 * time.Second)
	d.add(2, clk.Now())
	if !d.has(1) || !d.has(2) || d.has(3) {
		t.Fatal("keys added within the window must be found, others not")
	}
	// Just under the window after key 1: still there, whatever the pruning.
	clk.Step(89 * time.Second)
	d.prune(clk.Now())
	if !d.has(1) {
		t.Fatal("key 1 forgotten before its window passed")
	}
	// Well past the window of key 1 (and of its bucket) it goes; key 2 stays.
	clk.Step(31 * time.Second)
	d.add(4, clk.Now())
	d.prune(clk.Now())
	if d.has(1) {
		t.Fatal("key 1 kept past its window")
	}
	if !d.has(2) || !d.has(4) {
		t.Fatal("keys inside their window were dropped")
	}
	clk.Step(10 * time.Minute)
	d.add(5, clk.Now())
	d.prune(clk.Now())
	if d.size() != 1 || !d.has(5) {
		t.Fatalf("after a long gap only the newest key stays, have %d keys", d.size())
	}
}

func TestOutcomeDedupeKeys(t *testing.T) {
	base := store.Outcome{UID: "u1", EventID: "e1", AcceptedAt: "2026-11-28T10:00:00Z", Attempt: 1, Result: webhooksv1alpha1.ResultSucceeded}
	key := func(mut func(*store.Outcome)) uint64 {
		oc := base
		mut(&oc)
		k, ok := dedupeKey(&oc)
		if !ok {
			t.Fatal("no key")
		}
		return k
	}
	same := key(func(*store.Outcome) {})
	if key(func(o *store.Outcome) { o.Attempt = 3; o.Result = webhooksv1alpha1.ResultFailed }) != same {
		t.Error("an event ends once: its final outcomes share a key whatever the attempt and result")
	}
	for name, mut := range map[string]func(*store.Outcome){
		"another endpoint": func(o *store.Outcome) { o.UID = "u2" },
		"another event":    func(o *store.Outcome) { o.EventID = "e2" },
		"a replay":         func(o *store.Outcome) { o.AcceptedAt = "2026-11-28T11:00:00Z" },
		"a retry":          func(o *store.Outcome) { o.Result = webhooksv1alpha1.ResultRetrying },
	} {
		if key(mut) == same {
			t.Errorf("%s must have its own key", name)
		}
	}
	r1 := key(func(o *store.Outcome) { o.Result = webhooksv1alpha1.ResultRetrying })
	r2 := key(func(o *store.Outcome) { o.Result = webhooksv1alpha1.ResultRetrying; o.Attempt = 2 })
	if r1 == r2 {
		t.Error("retried attempts are distinct outcomes")
	}
	if _, ok := dedupeKey(&store.Outcome{UID: "u1", EventID: "e1"}); ok {
		t.Error("an outcome without its acceptance time has no key")
	}
}

// publishOutcomes stores one outcomes message, as the recorder does, and
// returns its stream sequence.
func publishOutcomes(t *testing.T, js jetstream.JetStream, ocs ...store.Outcome) uint64 {
	t.Helper()
	data, err := json.Marshal(ocs)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(context.Background(), store.OutcomeSubject(ocs[0].Namespace, ocs[0].Name), data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func finalOutcome(i int) store.Outcome {
	return store.Outcome{
		UID: "uid-crm", Namespace: "shop", Name: "crm", Generation: 1,
		EventID: fmt.Sprintf("e%d", i), EventType: "message.sent", Attempt: 1, Attempted: true,
		StatusCode: 200, Result: webhooksv1alpha1.ResultSucceeded, Reason: webhooksv1alpha1.ReasonDeliverySucceeded,
		Time: time.Now().UTC(), AcceptedAt: "2026-11-28T10:00:00Z",
	}
}

// handledSeqs records the stream sequences of the outcomes messages an
// aggregator is done with (its handled hook).
type handledSeqs struct {
	mu      sync.Mutex
	seqs    map[uint64]bool
	changed chan struct{} // closed and replaced when a sequence is added
}

func newHandledSeqs() *handledSeqs {
	return &handledSeqs{seqs: map[uint64]bool{}, changed: make(chan struct{})}
}

func (h *handledSeqs) add(seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seqs[seq] = true
	close(h.changed)
	h.changed = make(chan struct{})
}

// wait returns once every one of seqs is handled, and fails the test after
// 10 seconds.
func (h *handledSeqs) wait(t *testing.T, seqs ...uint64) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		missing := slices.DeleteFunc(slices.Clone(seqs), func(seq uint64) bool { return h.seqs[seq] })
		changed := h.changed
		h.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("outcomes messages %v not handled", missing)
		}
	}
}

// A delivery whose outcome was stored and folded in, then attempted again
// because its replica died before acknowledging it, is counted once: by the
// same aggregator, and by the next one after the aggregator died too.
func TestOutcomesRecordedTwiceAreCountedOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// Time stands still: no message is held for DedupeHold, so none is
	// acknowledged, however slow the machine.
	clk := clocktesting.NewFakeClock(time.Now())
	runAgg := func() (*Aggregator, *handledSeqs, func()) {
		agg := NewAggregator(st, clk.Now)
		handled := newHandledSeqs()
		agg.handled = handled.add
		actx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := agg.Run(actx, 50*time.Millisecond, logr.Discard()); err != nil && actx.Err() == nil {
				t.Errorf("aggregator: %v", err)
			}
		}()
		return agg, handled, func() { cancel(); <-done }
	}
	delivered := func(agg *Aggregator) int64 {
		st, _ := agg.Get(types.UID("uid-crm"))
		return st.EventsDelivered
	}
	// waitPersisted waits for the stored snapshot to list the messages seqs
	// as folded in and not acknowledged, and returns it.
	waitPersisted := func(seqs ...uint64) *EndpointStats {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		w, err := st.StatsBucket().Watch(wctx, statsKey("uid-crm"))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = w.Stop() }()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					t.Fatal("the stats watch stopped")
				}
				if e == nil {
					continue // the values stored so far are all in
				}
				var s EndpointStats
				if err := json.Unmarshal(e.Value(), &s); err != nil {
					t.Fatal(err)
				}
				if !slices.ContainsFunc(seqs, func(seq uint64) bool { return !slices.Contains(s.Unacked, seq) }) {
					return &s
				}
			case <-wctx.Done():
				t.Fatalf("no stored snapshot lists outcomes messages %v as unacknowledged", seqs)
			}
		}
	}

	agg, handled, stop := runAgg()
	seq1 := publishOutcomes(t, st.JetStream(), finalOutcome(1), finalOutcome(2))
	handled.wait(t, seq1)
	if got := delivered(agg); got != 2 {
		t.Fatalf("eventsDelivered %d, want 2", got)
	}
	// The same final outcome again (e2), in another message with a new one (e3).
	seq2 := publishOutcomes(t, st.JetStream(), finalOutcome(2), finalOutcome(3))
	handled.wait(t, seq2)
	if got := delivered(agg); got != 3 {
		t.Fatalf("a duplicate final outcome was counted: eventsDelivered %d, want 3", got)
	}
	// Persisted, not acknowledged (held for DedupeHold).
	if got := waitPersisted(seq1, seq2).EventsDelivered; got != 3 {
		t.Fatalf("stored eventsDelivered %d, want 3", got)
	}
	// The aggregator dies (its held messages unacknowledged); a duplicate of
	// e3 comes after it, as a redelivered delivery's outcome would.
	stop()
	seq3 := publishOutcomes(t, st.JetStream(), finalOutcome(3), finalOutcome(4))
	agg2, handled2, stop2 := runAgg()
	defer stop2()
	handled2.wait(t, seq1, seq2, seq3) // the held ones again, and the new one
	if got := delivered(agg2); got != 4 {
		t.Fatalf("after the aggregator's restart, eventsDelivered %d, want 4", got)
	}
	stop2()
	st.Close()
}
