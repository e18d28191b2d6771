package stats

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/wablast/webhook-operator/internal/store"
)

// acceptedA and acceptedB are two acceptance times: two lives of an event
// (the second a replay).
const (
	acceptedA = "2026-11-28T10:00:00Z"
	acceptedB = "2026-11-28T11:00:00Z"
)

// at endpoint u1, in the life accepted at acceptedA.
func keyed(oc store.Outcome) store.Outcome {
	oc.UID, oc.Namespace, oc.Name, oc.AcceptedAt = "u1", "shop", "crm", acceptedA
	return oc
}

// keyedReplay is oc at endpoint u1 as the first outcome of a replay (the
// life accepted at acceptedB) of an event that had failed for good at t0.
func keyedReplay(oc store.Outcome) store.Outcome {
	oc = keyed(oc)
	oc.AcceptedAt = acceptedB
	oc.ReplacesFailure = t0
	return oc
}

func TestLedgerReceive(t *testing.T) {
	for _, tc := range []struct {
		name    string
		earlier []uint64                      // folded in by an earlier run, not acknowledged
		before  func(l *ledger, t0 time.Time) // what the ledger saw first
		at      time.Duration                 // when seq 1 comes, after t0
		want    msgVerdict
	}{{
		name: "a new message is folded in",
		want: msgFold,
	}, {
		name:   "a message received again while held is already held",
		before: func(l *ledger, t0 time.Time) { l.receive(1, t0) },
		at:     time.Second,
		want:   msgAgain,
	}, {
		name:    "a message an earlier run folded in gives its keys only",
		earlier: []uint64{1},
		want:    msgKeysOnly,
	}, {
		name:    "a message an earlier run folded in, received again, is already held",
		earlier: []uint64{1},
		before:  func(l *ledger, t0 time.Time) { l.receive(1, t0) },
		want:    msgAgain,
	}, {
		name: "a message is remembered for twice the ack wait",
		before: func(l *ledger, t0 time.Time) {
			l.receive(1, t0)
			l.prune(t0.Add(2 * statsAckWait))
		},
		at:   2 * statsAckWait,
		want: msgAgain,
	}, {
		name: "a message received after it was forgotten is new again",
		before: func(l *ledger, t0 time.Time) {
			l.receive(1, t0)
			l.prune(t0.Add(2*statsAckWait + time.Nanosecond))
		},
		at:   2*statsAckWait + time.Nanosecond,
		want: msgFold,
	}, {
		name:   "other messages do not matter",
		before: func(l *ledger, t0 time.Time) { l.receive(2, t0) },
		want:   msgFold,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger()
			l.alreadyCounted(tc.earlier)
			if tc.before != nil {
				tc.before(l, t0)
			}
			if got := l.receive(1, t0.Add(tc.at)); got != tc.want {
				t.Errorf("verdict %d, want %d", got, tc.want)
			}
		})
	}
}

func TestLedgerFirstRecord(t *testing.T) {
	type step struct {
		after time.Duration // since the previous step
		oc    store.Outcome
		want  bool
	}
	other := keyed(succeeded("e1", 1))
	other.UID = "u2"
	unkeyed := succeeded("e1", 1)
	for _, tc := range []struct {
		name  string
		steps []step
	}{{
		name: "a final outcome recorded twice counts once",
		steps: []step{
			{0, keyed(succeeded("e1", 1)), true},
			{time.Second, keyed(succeeded("e1", 1)), false},
		},
	}, {
		name: "an event ends once, whichever attempt and result end it",
		steps: []step{
			{0, keyed(failed("e1", 3)), true},
			{time.Second, keyed(succeeded("e1", 3)), false},
			{time.Second, keyed(gaveUp("e1", 2)), false},
		},
	}, {
		name: "each retried attempt counts once, then the end",
		steps: []step{
			{0, keyed(retrying("e1", 1)), true},
			{time.Second, keyed(retrying("e1", 1)), false},
			{time.Second, keyed(retrying("e1", 2)), true},
			{time.Second, keyed(succeeded("e1", 3)), true},
			{time.Second, keyed(retrying("e1", 2)), false},
		},
	}, {
		name: "the ending attempt made again after the end, answered with an error, does not count",
		steps: []step{
			{0, keyed(retrying("e1", 1)), true},
			{time.Second, keyed(succeeded("e1", 2)), true},
			{time.Second, keyed(retrying("e1", 2)), false},
			{time.Second, keyed(succeeded("e1", 3)), false},
		},
	}, {
		name: "an earlier attempt's record after the end still counts",
		steps: []step{
			{0, keyed(succeeded("e1", 2)), true},
			{0, keyed(retrying("e1", 1)), true},
		},
	}, {
		name: "a replay of a failed event is a new life",
		steps: []step{
			{0, keyed(failed("e1", 3)), true},
			{time.Second, keyedReplay(succeeded("e1", 1)), true},
			{time.Second, keyedReplay(succeeded("e1", 1)), false},
		},
	}, {
		name: "other events and endpoints are apart",
		steps: []step{
			{0, keyed(succeeded("e1", 1)), true},
			{0, keyed(succeeded("e2", 1)), true},
			{0, other, true},
		},
	}, {
		name: "outcomes without an acceptance time always count",
		steps: []step{
			{0, unkeyed, true},
			{time.Second, unkeyed, true},
		},
	}, {
		name: "out of order: whichever record comes first counts",
		steps: []step{
			{0, keyed(succeeded("e2", 1)), true},
			{0, keyed(retrying("e1", 2)), true},
			{0, keyed(retrying("e1", 1)), true},
			{0, keyed(succeeded("e1", 3)), true},
			{0, keyed(retrying("e1", 1)), false},
			{0, keyed(succeeded("e2", 1)), false},
		},
	}, {
		name: "a duplicate within the window is caught",
		steps: []step{
			{0, keyed(succeeded("e1", 1)), true},
			{dedupeWindow - time.Second, keyed(succeeded("e1", 1)), false},
		},
	}, {
		name: "a duplicate past the window counts again",
		steps: []step{
			{0, keyed(succeeded("e1", 1)), true},
			{dedupeWindow / 2, keyed(succeeded("e2", 1)), true},
			{dedupeWindow/2 + dedupeWindow/dedupeBuckets, keyed(succeeded("e1", 1)), true},
		},
	}, {
		name: "the newest keys are kept past the window while no newer come",
		steps: []step{
			{0, keyed(succeeded("e1", 1)), true},
			{time.Hour, keyed(succeeded("e1", 1)), false},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger()
			now := t0
			for i, s := range tc.steps {
				now = now.Add(s.after)
				l.prune(now)
				if got := l.firstRecord(&s.oc, now); got != s.want {
					t.Errorf("step %d (%s %s/%d of %s): first record %v, want %v", i, s.oc.Result, s.oc.EventID, s.oc.Attempt, s.oc.UID, got, s.want)
				}
			}
		})
	}
}

func TestLedgerPlanAcks(t *testing.T) {
	now := t0.Add(time.Hour)
	for _, tc := range []struct {
		name string
		held []time.Duration // how long before now each was received
		due  []uint64
	}{
		{"nothing held", nil, nil},
		{"none held long enough", []time.Duration{time.Second, 0}, nil},
		{"held for DedupeHold exactly is not yet due", []time.Duration{DedupeHold}, nil},
		{"held for longer is due", []time.Duration{DedupeHold + time.Nanosecond}, []uint64{1}},
		{"due and not, mixed", []time.Duration{10 * time.Second, DedupeHold, time.Minute, time.Second}, []uint64{1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger()
			for i, ago := range tc.held {
				l.hold(heldOutcome{seq: uint64(i + 1), uid: "u1", at: now.Add(-ago)})
			}
			p := l.planAcks(now)
			if got := seqs(p.due); !slices.Equal(got, tc.due) {
				t.Errorf("due %v, want %v", got, tc.due)
			}
			if len(l.held) != len(tc.held) {
				t.Errorf("planning changed what is held: %d, want %d", len(l.held), len(tc.held))
			}
			// A message received meanwhile stays held with the rest.
			l.hold(heldOutcome{seq: 99, uid: "u1", at: now})
			l.acked(p)
			var want []uint64
			for i := range tc.held {
				if seq := uint64(i + 1); !slices.Contains(tc.due, seq) {
					want = append(want, seq)
				}
			}
			want = append(want, 99)
			if got := seqs(l.held); !slices.Equal(got, want) {
				t.Errorf("held after acknowledging %v, want %v", got, want)
			}
		})
	}
}

func seqs(hs []heldOutcome) []uint64 {
	var out []uint64
	for _, h := range hs {
		out = append(out, h.seq)
	}
	return out
}

// nopAck stands in for a JetStream message: the aggregator only acks it.
type nopAck struct{ acks *int }

func (n nopAck) Ack() error {
	if n.acks != nil {
		*n.acks++
	}
	return nil
}

// The aggregator folding messages as the ledger decides, without NATS.
func TestAggregatorFoldsEachOutcomeOnce(t *testing.T) {
	type msg struct {
		seq uint64
		ocs []store.Outcome
	}
	m := func(seq uint64, ocs ...store.Outcome) msg { return msg{seq, ocs} }
	otherEndpoint := keyed(succeeded("e9", 1))
	otherEndpoint.UID = "u2"
	for _, tc := range []struct {
		name    string
		earlier []uint64 // folded in by an earlier run, not acknowledged
		msgs    []msg
		want    counters
		unacked []uint64
	}{{
		name:    "first success",
		msgs:    []msg{m(1, keyed(succeeded("e1", 1)))},
		want:    counters{sent: 1, delivered: 1},
		unacked: []uint64{1},
	}, {
		name:    "retrying, then success",
		msgs:    []msg{m(1, keyed(retrying("e1", 1))), m(2, keyed(succeeded("e1", 2)))},
		want:    counters{sent: 1, delivered: 1},
		unacked: []uint64{1, 2},
	}, {
		name:    "retrying, then failed for good",
		msgs:    []msg{m(1, keyed(retrying("e1", 1))), m(2, keyed(failed("e1", 2)))},
		want:    counters{sent: 1, failed: 1, consecutiveFailures: 1},
		unacked: []uint64{1, 2},
	}, {
		name:    "failed for good, then replayed and delivered: counted once, delivered",
		msgs:    []msg{m(1, keyed(failed("e1", 1))), m(2, keyedReplay(succeeded("e1", 1)))},
		want:    counters{sent: 1, delivered: 1},
		unacked: []uint64{1, 2},
	}, {
		name:    "a replay's outcome recorded twice takes the failure back once",
		msgs:    []msg{m(1, keyed(failed("e1", 1)), keyed(failed("e2", 1))), m(2, keyedReplay(succeeded("e1", 1))), m(3, keyedReplay(succeeded("e1", 1)))},
		want:    counters{sent: 2, delivered: 1, failed: 1},
		unacked: []uint64{1, 2, 3},
	}, {
		name:    "the same final outcome again in a later message, beside a new one",
		msgs:    []msg{m(1, keyed(succeeded("e1", 1)), keyed(succeeded("e2", 1))), m(2, keyed(succeeded("e2", 1)), keyed(succeeded("e3", 1)))},
		want:    counters{sent: 3, delivered: 3},
		unacked: []uint64{1, 2},
	}, {
		name:    "a duplicate within one message",
		msgs:    []msg{m(1, keyed(succeeded("e1", 1)), keyed(succeeded("e1", 1)))},
		want:    counters{sent: 1, delivered: 1},
		unacked: []uint64{1},
	}, {
		name:    "a message redelivered while held is neither folded nor held again",
		msgs:    []msg{m(1, keyed(succeeded("e1", 1))), m(1, keyed(succeeded("e1", 1)))},
		want:    counters{sent: 1, delivered: 1},
		unacked: []uint64{1},
	}, {
		name:    "a message an earlier run folded in is held, not counted, and teaches its keys",
		earlier: []uint64{1},
		msgs:    []msg{m(1, keyed(succeeded("e1", 1))), m(2, keyed(succeeded("e1", 1)), keyed(succeeded("e2", 1)))},
		want:    counters{sent: 1, delivered: 1},
		unacked: []uint64{1, 2},
	}, {
		name:    "messages out of stream order: the first record counts",
		msgs:    []msg{m(2, keyed(succeeded("e2", 1))), m(1, keyed(succeeded("e1", 1)), keyed(succeeded("e2", 1)))},
		want:    counters{sent: 2, delivered: 2},
		unacked: []uint64{2, 1},
	}, {
		name:    "another endpoint's outcome in a message is not this one's",
		msgs:    []msg{m(1, keyed(succeeded("e1", 1)), otherEndpoint)},
		want:    counters{sent: 1, delivered: 1},
		unacked: []uint64{1},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(t0)
			a := NewAggregator(nil, clk.Now)
			a.ledger.alreadyCounted(tc.earlier)
			for _, msg := range tc.msgs {
				a.fold(nopAck{}, msg.seq, msg.ocs)
				clk.Step(time.Millisecond)
			}
			st, ok := a.Get("u1")
			if !ok {
				t.Fatal("no stats for u1")
			}
			if got := st.counters(); got != tc.want {
				t.Errorf("counters %+v, want %+v", got, tc.want)
			}
			if !slices.Equal(st.Unacked, tc.unacked) {
				t.Errorf("unacked %v, want %v", st.Unacked, tc.unacked)
			}
			if got := seqs(a.ledger.held); !slices.Equal(got, tc.unacked) {
				t.Errorf("held %v, want %v", got, tc.unacked)
			}
			if _, ok := a.Get("u2"); ok {
				t.Error("stats made for an endpoint that is not the message's")
			}
		})
	}
}

// What persist acknowledges, and what the next snapshot lists as Unacked,
// as time passes: without the store, the plan persist acts on.
func TestAggregatorHoldsMessagesForDedupeHold(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	a := NewAggregator(nil, clk.Now)
	acks := 0
	for i := range 3 {
		a.fold(nopAck{&acks}, uint64(i+1), []store.Outcome{keyed(succeeded(fmt.Sprint("e", i), 1))})
		clk.Step(2 * time.Second)
	}
	// Received at t0, t0+2s, t0+4s; now t0+6s: only the first is due.
	p := a.ledger.planAcks(clk.Now())
	if got := seqs(p.due); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("due %v at +6s, want [1]", got)
	}
	for _, h := range p.due {
		_ = h.m.Ack()
	}
	a.ledger.acked(p)
	if acks != 1 || !slices.Equal(seqs(a.ledger.held), []uint64{2, 3}) {
		t.Errorf("%d acks, held %v; want 1 ack, held [2 3]", acks, seqs(a.ledger.held))
	}
	st, _ := a.Get(types.UID("u1"))
	if st.EventsDelivered != 3 {
		t.Errorf("delivered %d, want 3", st.EventsDelivered)
	}
}
