package stats

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

// DedupeHold is how long an outcome message stays unacknowledged after it
// was folded in. A replica acknowledges a delivery right after its outcome
// is stored; should the leader die in between, the held messages come back
// to the next leader (skipped, not counted again) and give it the dedupe
// keys of the outcomes whose deliveries may come again.
const DedupeHold = 5 * time.Second

// dedupeWindow is how long an outcome's dedupe key is remembered: the time
// within which a delivery whose acknowledgement was lost is attempted again
// (the ack wait) and finishes.
const dedupeWindow = 2 * time.Minute

// statsAckWait is the stats consumer's ack wait; outcomes are acked within
// a persist interval of being folded in.
const statsAckWait = 30 * time.Second

// ledger is the Aggregator's record of what it has counted, so that each
// outcome is counted once however often it is recorded or its message is
// delivered. It decides; the Aggregator acts on the decisions (folds
// outcomes in, writes snapshots, acknowledges messages). It does no I/O,
// reads no clock (every call is given the time) and is guarded by the
// Aggregator's mutex.
type ledger struct {
	// applied are the outcomes messages (by stream sequence) received by
	// this run, until their acknowledgement can no longer be lost (twice
	// the ack wait).
	applied map[uint64]time.Time
	// skip are the messages an earlier run folded in without acknowledging
	// them (the snapshots' Unacked).
	skip map[uint64]bool
	// seen holds the dedupe keys of the outcomes received over the last
	// dedupeWindow, so an event's outcome recorded twice (delivered,
	// recorded, then delivered again because the replica died before its
	// acknowledgement) is counted once.
	seen *dedupeSet
	// held are the messages received and not yet acknowledged, in the order
	// received. Each is acknowledged once a snapshot listing its sequence is
	// stored and it has been held for DedupeHold.
	held []heldOutcome
}

// heldOutcome is an outcome message not yet acknowledged.
type heldOutcome struct {
	m   acker // the message itself, for the Aggregator; the ledger never calls it
	seq uint64
	uid types.UID
	at  time.Time
}

// acker is what the Aggregator does with a held message once the ledger
// says it is due.
type acker interface{ Ack() error }

func newLedger() *ledger {
	return &ledger{applied: map[uint64]time.Time{}, skip: map[uint64]bool{}, seen: newDedupeSet(dedupeWindow)}
}

// msgVerdict is what to do with an outcomes message.
type msgVerdict uint8

const (
	// msgAgain: this run received the message already, within twice the
	// ack wait: a redelivery while it is held (or after an acknowledgement
	// that was lost). Nothing to do.
	msgAgain msgVerdict = iota
	// msgFold: a new message. Fold in each of its outcomes that is a first
	// record, then hold it.
	msgFold
	// msgKeysOnly: an earlier run folded the message in and died before
	// acknowledging it. Its outcomes are counted already; only their dedupe
	// keys are learnt. Hold it.
	msgKeysOnly
)

// alreadyCounted marks messages as folded in by an earlier run: the
// sequences listed in the snapshots' Unacked.
func (l *ledger) alreadyCounted(seqs []uint64) {
	for _, seq := range seqs {
		l.skip[seq] = true
	}
}

// receive decides what to do with the message at stream sequence seq,
// received at now, and remembers it as received.
func (l *ledger) receive(seq uint64, now time.Time) msgVerdict {
	if _, done := l.applied[seq]; done {
		return msgAgain
	}
	l.applied[seq] = now
	if l.skip[seq] {
		return msgKeysOnly
	}
	return msgFold
}

// firstRecord reports whether oc is the first record, within the dedupe
// window, of what it records, and remembers it as recorded at now. An
// outcome without a dedupe key is always a first record.
//
// An attempt to be retried that has the number of the attempt that ended
// the event is not a first record either: it is that attempt made again
// after the event ended (its delivery was cut off by a crash between the
// outcome and its acknowledgement, and the receiver answered the repeat
// with an error), and counting it would open the event again.
func (l *ledger) firstRecord(oc *store.Outcome, now time.Time) bool {
	key, ok := dedupeKey(oc)
	if !ok {
		return true
	}
	if l.seen.has(key) {
		return false
	}
	end := endedAtKey(oc)
	if oc.Result == webhooksv1alpha1.ResultRetrying && l.seen.has(end) {
		return false
	}
	l.seen.add(key, now)
	if oc.Result != webhooksv1alpha1.ResultRetrying {
		l.seen.add(end, now)
	}
	return true
}

// hold keeps a received message until it is acknowledged.
func (l *ledger) hold(h heldOutcome) { l.held = append(l.held, h) }

// ackPlan says which held messages are acknowledged after the next snapshot
// is stored.
type ackPlan struct {
	// due have been held for DedupeHold: acknowledge them once the snapshot
	// listing them is stored.
	due []heldOutcome
	// kept are the rest of the first n held messages, held on.
	kept []heldOutcome
	n    int
}

// planAcks decides which held messages are due for acknowledgement at now.
// It changes nothing: acked does, once the Aggregator has acknowledged them.
func (l *ledger) planAcks(now time.Time) ackPlan {
	ackBefore := now.Add(-DedupeHold)
	p := ackPlan{n: len(l.held), kept: l.held[:0:0]}
	for _, h := range l.held {
		if h.at.Before(ackBefore) {
			p.due = append(p.due, h)
		} else {
			p.kept = append(p.kept, h)
		}
	}
	return p
}

// acked drops the messages p found due, keeping those received since p was
// made.
func (l *ledger) acked(p ackPlan) {
	l.held = append(p.kept, l.held[p.n:]...)
}

// prune drops, as of now, the messages whose acknowledgement can no longer
// be lost and the dedupe keys past their window.
func (l *ledger) prune(now time.Time) {
	forgetBefore := now.Add(-2 * statsAckWait)
	for seq, at := range l.applied {
		if at.Before(forgetBefore) {
			delete(l.applied, seq)
		}
	}
	l.seen.prune(now)
}
