package delivery

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
)

// Group commit bounds: a batch message carries at most this many deliveries
// (a crash hands a whole message out again, so this bounds the duplicates
// it causes) and about this many bytes of bodies (NATS's default payload
// limit is 1 MiB; an event is at most 256 KiB by default), and an endpoint
// has at most this many batch writes waiting for JetStream's
// acknowledgement at once. The values were chosen by measuring with `make
// bench` (docs/benchmarks.md).
const (
	maxBatchDeliveries     = 64
	maxBatchBytes          = 512 << 10
	maxBatchWritesInFlight = 1
)

// batcher stores the deliveries Enqueue accepts with as few JetStream writes
// as it can (group commit). Per endpoint, a delivery is written at once when
// fewer than maxBatchWritesInFlight writes are waiting for their
// acknowledgement; otherwise it joins the next write, which starts as soon
// as one of those is acknowledged. Under light load every delivery is a
// write of its own; under heavy load one write stores many, and JetStream
// stores, hands out and acknowledges one message for all of them.
//
// When a write carried several deliveries (requests overlap: the endpoint is
// busy), the next one waits up to delay for more to join it, or until it is
// full, like PostgreSQL's commit_delay with commit_siblings: a little more
// latency per accepted event under load buys larger messages, which is less
// CPU per event (docs/benchmarks.md has the figures). A write after one that
// carried a single delivery never waits.
type batcher struct {
	js    jetstream.JetStream
	delay time.Duration
	// counts learns the deliveries each message stored carries (backlog.go).
	counts *batchCounts
	dlog   *deliveryLog
	mu     sync.Mutex
	queues map[types.UID]*batchQueue
}

// batchQueue is one endpoint's writes: writing are in flight, waiting are not
// started yet (only the last one still takes deliveries).
type batchQueue struct {
	ns, name string
	uid      types.UID
	writing  int
	waiting  []*batchWrite
	// full is signalled when the next write has become full, ending a wait
	// for more deliveries.
	full chan struct{}
}

// batchWrite is one message's worth of deliveries; done is closed once it was
// stored (err nil) or failed.
type batchWrite struct {
	items []store.Delivery
	size  int
	done  chan struct{}
	err   error
}

// newBatcher returns a batcher whose writes after a write of several
// deliveries wait up to delay for more (0: never).
func newBatcher(js jetstream.JetStream, delay time.Duration, counts *batchCounts) *batcher {
	return &batcher{js: js, delay: delay, counts: counts, queues: map[types.UID]*batchQueue{}}
}

// fullLocked reports whether the next write of q can take no more deliveries.
func (q *batchQueue) fullLocked() bool {
	return len(q.waiting) > 1 || len(q.waiting) == 1 && len(q.waiting[0].items) >= maxBatchDeliveries
}

// add queues deliveries to one endpoint and returns the writes that carry
// them; each is done when its message was stored or failed.
func (b *batcher) add(ns string, ep *endpoint.Endpoint, ds []store.Delivery) []*batchWrite {
	var ws []*batchWrite
	var start []*batchWrite
	b.mu.Lock()
	q := b.queues[ep.UID]
	if q == nil {
		q = &batchQueue{ns: ns, name: ep.Name, uid: ep.UID, full: make(chan struct{}, 1)}
		b.queues[ep.UID] = q
	}
	for i := range ds {
		var w *batchWrite
		if n := len(q.waiting); n > 0 && len(q.waiting[n-1].items) < maxBatchDeliveries && q.waiting[n-1].size+len(ds[i].Body) <= maxBatchBytes {
			w = q.waiting[n-1]
		} else {
			w = &batchWrite{done: make(chan struct{})}
			q.waiting = append(q.waiting, w)
		}
		w.items = append(w.items, ds[i])
		w.size += len(ds[i].Body)
		if len(ws) == 0 || ws[len(ws)-1] != w {
			ws = append(ws, w)
		}
	}
	for q.writing < maxBatchWritesInFlight && len(q.waiting) > 0 {
		start = append(start, q.waiting[0])
		q.waiting = q.waiting[1:]
		q.writing++
	}
	if q.fullLocked() {
		select {
		case q.full <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
	for _, w := range start {
		go b.write(q, w)
	}
	return ws
}

// write stores w, then whatever waits behind it, until the queue is empty.
func (b *batcher) write(q *batchQueue, w *batchWrite) {
	for {
		w.err = b.store(q, w.items)
		close(w.done)
		if b.delay > 0 && len(w.items) > 1 {
			b.linger(q)
		}
		b.mu.Lock()
		if len(q.waiting) == 0 {
			q.writing--
			if q.writing == 0 {
				delete(b.queues, q.uid)
			}
			b.mu.Unlock()
			return
		}
		w = q.waiting[0]
		q.waiting = q.waiting[1:]
		b.mu.Unlock()
	}
}

// linger waits up to b.delay for the next write of q to fill.
func (b *batcher) linger(q *batchQueue) {
	select {
	case <-q.full: // from an earlier write
	default:
	}
	b.mu.Lock()
	full := q.fullLocked()
	b.mu.Unlock()
	if full {
		return
	}
	timer := time.NewTimer(b.delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-q.full:
	}
}

func (b *batcher) store(q *batchQueue, ds []store.Delivery) error {
	b.dlog.stored(q.ns, q.name, q.uid, ds, "")
	f, err := b.js.PublishMsgAsync(store.BatchMsg(q.ns, q.name, q.uid, ds))
	if err != nil {
		return err
	}
	select {
	case ack := <-f.Ok():
		if len(ds) > 1 && b.counts != nil {
			b.counts.stored(types.NamespacedName{Namespace: q.ns, Name: q.name}, ack.Sequence, len(ds))
		}
		return nil
	case err := <-f.Err():
		return err
	}
}
