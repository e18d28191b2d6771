package deliverylog

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/store"
)

// The fed index (Options.Fed, the embedded store): the process that writes
// every record of the log hands the index what it wrote (Logged, from the
// acknowledgement of each write), so the index is built without reading
// the records back. Reading them back, even headers only, makes the
// embedded server load each block of the stream into memory (8 MiB, kept
// for seconds): a burst of large events then holds several blocks of the
// log in the manager's memory at once (the 20-batch burst test peaked 75
// MiB higher that way). The stream is still read where nothing was fed:
// at the start (what was written after the index's last write) and for a
// write whose acknowledgement was lost or not handed over (a hole that
// stays one gapChecks long).

// maxFed bounds the entries waiting to be indexed; past it Logged drops
// them, and they are read back from the stream as a hole.
const maxFed = 1 << 16

// gapCheck is how often the fed index looks for records nothing fed.
const gapCheck = 500 * time.Millisecond

// fedQueue holds the entries handed over and not indexed yet, by sequence.
type fedQueue struct {
	mu      sync.Mutex
	pending map[uint64]entry
	signal  chan struct{}
}

func newFedQueue() *fedQueue {
	return &fedQueue{pending: map[uint64]entry{}, signal: make(chan struct{}, 1)}
}

func (q *fedQueue) put(e entry) {
	q.mu.Lock()
	if len(q.pending) >= maxFed {
		q.mu.Unlock()
		return
	}
	q.pending[e.seq] = e
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// take drops the entries at or below last and removes the run that
// follows it without a hole: it returns the run's entries the index has a
// use for (in sequence order), the run's last sequence (last when there
// is no run), and the lowest sequence still waiting after it (0: none).
func (q *fedQueue) take(last uint64) (run []entry, top, next uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for seq := range q.pending {
		if seq <= last {
			delete(q.pending, seq)
		}
	}
	top = last
	for {
		e, ok := q.pending[top+1]
		if !ok {
			break
		}
		delete(q.pending, top+1)
		top++
		if e.id != "" {
			run = append(run, e)
		}
	}
	for seq := range q.pending {
		if next == 0 || seq < next {
			next = seq
		}
	}
	return run, top, next
}

// Logged hands the index a log message this process wrote: stored at
// stream sequence seq, on subject subj, with headers h. Only a Reader
// opened with Options.Fed uses it. It never blocks: the entries wait for
// the indexer, and when too many wait the message is read back from the
// stream instead.
func (r *Reader) Logged(seq uint64, subj string, h nats.Header) {
	if r.fed == nil || seq == 0 {
		return
	}
	e := entry{seq: seq, time: time.Now()}
	key, ok := store.EndpointOfLogSubject(subj)
	if id, starts := store.LogEventOf(h); ok && id != "" {
		e.ns, e.webhook, e.id, e.starts = key.Namespace, key.Name, id, starts
	}
	r.fed.put(e)
}

// followFed keeps the fed index up to date from last on until ctx ends:
// it indexes what is handed over, and reads back from the stream the
// records nothing handed over.
func (r *Reader) followFed(ctx context.Context, last uint64) error {
	prune := time.NewTicker(r.opts.PruneInterval)
	defer prune.Stop()
	check := time.NewTicker(gapCheck)
	defer check.Stop()
	// hole is the index's last sequence when a hole after it was first
	// seen: read back when the index is still there at the next check.
	var hole uint64
	holeSeen := false
	for {
		checking := false
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			if err := r.pruneNow(ctx); err != nil {
				r.opts.Logger.Error(err, "Pruning the delivery log's index failed; retrying at the next interval")
			}
			continue
		case <-r.fed.signal:
		case <-check.C:
			checking = true
		}
		run, top, next := r.fed.take(last)
		if top > last {
			if err := r.idx.add(run, top); err != nil {
				return err
			}
			last = top
		}
		if !checking {
			continue
		}
		target := next - 1 // a hole before what waits
		if next == 0 {
			info, err := r.stream(ctx)
			if err != nil {
				return err
			}
			target = info.State.LastSeq // or after the last handed over
		}
		switch {
		case target <= last:
			holeSeen = false
		case !holeSeen || hole != last:
			hole, holeSeen = last, true
		default:
			var err error
			if last, err = r.readBack(ctx, last, target); err != nil {
				return err
			}
			holeSeen = false
		}
	}
}

// readBack indexes the stream's records after last up to target (fewer
// when the stream holds fewer), reading their headers, and returns the
// last sequence indexed.
func (r *Reader) readBack(ctx context.Context, last, target uint64) (uint64, error) {
	cons, err := r.js.OrderedConsumer(ctx, store.StreamDeliveryLog, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   last + 1,
		HeadersOnly:   true,
	})
	if err != nil {
		return last, fmt.Errorf("reading the delivery log back: %w", err)
	}
	batch := make([]entry, 0, indexBatch)
	for last < target {
		msgs, err := cons.Fetch(min(indexBatch, int(target-last)), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return last, fmt.Errorf("reading the delivery log back: %w", err)
		}
		batch = batch[:0]
		top := last
		for m := range msgs.Messages() {
			r.readBackCount.Add(1)
			e, seq, ok := entryOf(m)
			if ok {
				batch = append(batch, e)
			}
			top = max(top, seq)
		}
		if err := msgs.Error(); err != nil && ctx.Err() == nil {
			return last, fmt.Errorf("reading the delivery log back: %w", err)
		}
		if top == last {
			return last, nil // the stream holds nothing more
		}
		if err := r.idx.add(batch, top); err != nil {
			return last, err
		}
		last = top
	}
	return last, nil
}
