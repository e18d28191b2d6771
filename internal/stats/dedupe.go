package stats

import (
	"hash/fnv"
	"strconv"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

// dedupeSet remembers 64-bit keys for at least a window, in time buckets so
// that forgetting old keys costs one map drop per bucket, not a scan. It
// reads no clock: the caller gives the time to add and prune.
type dedupeSet struct {
	width   time.Duration
	buckets []map[uint64]struct{}
	starts  []time.Time
}

// dedupeBuckets is how many buckets cover the window.
const dedupeBuckets = 12

func newDedupeSet(window time.Duration) *dedupeSet {
	return &dedupeSet{width: window / dedupeBuckets}
}

func (d *dedupeSet) has(key uint64) bool {
	for _, b := range d.buckets {
		if _, ok := b[key]; ok {
			return true
		}
	}
	return false
}

// add remembers key as added at now.
func (d *dedupeSet) add(key uint64, now time.Time) {
	n := len(d.buckets)
	if n == 0 || now.Sub(d.starts[n-1]) >= d.width {
		d.buckets = append(d.buckets, map[uint64]struct{}{})
		d.starts = append(d.starts, now)
		n++
	}
	d.buckets[n-1][key] = struct{}{}
}

// prune drops the buckets whose every key is older than the window. A
// bucket holds the keys added from its start until the next bucket's start
// and for no longer than its width.
func (d *dedupeSet) prune(now time.Time) {
	cutoff := now.Add(-d.width * dedupeBuckets)
	i := 0
	for i < len(d.starts)-1 {
		end := d.starts[i].Add(d.width)
		if next := d.starts[i+1]; next.Before(end) {
			end = next
		}
		if end.After(cutoff) {
			break
		}
		i++
	}
	if i > 0 {
		d.buckets = append(d.buckets[:0:0], d.buckets[i:]...)
		d.starts = append(d.starts[:0:0], d.starts[i:]...)
	}
}

// size is the number of keys held, for tests.
func (d *dedupeSet) size() int {
	n := 0
	for _, b := range d.buckets {
		n += len(b)
	}
	return n
}

// dedupeKey names what the outcome records, so that a second record of it
// (the delivery attempted again after its acknowledgement was lost) is
// recognised: an event's end at an endpoint (one per event, whichever attempt
// ended it), or one attempt that is to be retried. The event's acceptance
// time is part of it, so a replay (accepted again) is a new life. Outcomes
// written before acceptance times were recorded have no key.
func dedupeKey(oc *store.Outcome) (uint64, bool) {
	if oc.AcceptedAt == "" {
		return 0, false
	}
	h := fnv.New64a()
	if oc.Result == webhooksv1alpha1.ResultRetrying {
		h.Write([]byte("a\x00"))
	} else {
		h.Write([]byte("f\x00"))
	}
	for _, part := range []string{string(oc.UID), oc.EventID, oc.AcceptedAt} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	if oc.Result == webhooksv1alpha1.ResultRetrying {
		h.Write([]byte(strconv.Itoa(int(oc.Attempt))))
	}
	return h.Sum64(), true
}

// endedAtKey names the end of the outcome's event at its endpoint by the
// number of the attempt that ended it (see ledger.firstRecord); only for
// outcomes that have a dedupeKey.
func endedAtKey(oc *store.Outcome) uint64 {
	h := fnv.New64a()
	h.Write([]byte("e\x00"))
	for _, part := range []string{string(oc.UID), oc.EventID, oc.AcceptedAt, strconv.Itoa(int(oc.Attempt))} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return h.Sum64()
}
