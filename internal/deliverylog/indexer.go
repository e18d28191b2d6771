package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/store"
)

// indexBatch is the most messages indexed in one write.
const indexBatch = 1024

// Start keeps the index up to date until ctx ends: it follows the log's
// stream from the last sequence the index holds (after a restart, the
// records written meanwhile are indexed first), reading the messages'
// headers only, and every PruneInterval forgets the deliveries that aged
// out of the stream. It is a manager.Runnable, run by every manager
// process that serves the API: a failure is logged and retried, and reads
// meanwhile answer as of what the index holds.
func (r *Reader) Start(ctx context.Context) error {
	backoff := time.Second
	for {
		err := r.follow(ctx)
		if ctx.Err() != nil {
			return nil //nolint:nilerr // stopped: whatever follow met on the way out is no failure of the index
		}
		r.opts.Logger.Error(err, "Following the delivery log for its index failed; retrying", "retryIn", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica keeps its own index.
func (r *Reader) NeedLeaderElection() bool { return false }

// follow indexes the stream from where the index is until ctx ends or the
// stream fails it.
func (r *Reader) follow(ctx context.Context) error {
	info, err := r.stream(ctx)
	if err != nil {
		return err
	}
	created := info.Created.UnixNano()
	last, _ := r.idx.indexed()
	r.idx.mu.Lock()
	same := r.idx.created == created
	r.idx.mu.Unlock()
	if !same || last > info.State.LastSeq {
		// A new stream (made anew, or the first start): from its start.
		if err := r.idx.reset(created, 0); err != nil {
			return err
		}
		last = 0
	}
	if first := info.State.FirstSeq; first > last+1 {
		// Records aged out while nothing indexed them.
		if _, err := r.idx.prune(first); err != nil {
			return err
		}
		if err := r.idx.add(nil, first-1); err != nil {
			return err
		}
		last = first - 1
	}
	if r.fed != nil {
		if last, err = r.readBack(ctx, last, info.State.LastSeq); err != nil {
			return err
		}
		return r.followFed(ctx, last)
	}
	cons, err := r.js.OrderedConsumer(ctx, store.StreamDeliveryLog, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   last + 1,
		HeadersOnly:   true,
	})
	if err != nil {
		return fmt.Errorf("following the delivery log: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(indexBatch))
	if err != nil {
		return fmt.Errorf("following the delivery log: %w", err)
	}
	defer it.Stop()
	msgs := make(chan jetstream.Msg, indexBatch)
	failed := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				failed <- err
				return
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	}()
	prune := time.NewTicker(r.opts.PruneInterval)
	defer prune.Stop()
	batch := make([]entry, 0, indexBatch)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("following the delivery log: %w", err)
		case <-prune.C:
			if err := r.pruneNow(ctx); err != nil {
				r.opts.Logger.Error(err, "Pruning the delivery log's index failed; retrying at the next interval")
			}
		case m := <-msgs:
			// Everything already there, in one write.
			batch = batch[:0]
			var top uint64
			for m != nil {
				if e, seq, ok := entryOf(m); ok {
					batch = append(batch, e)
					top = seq
				} else if seq > 0 {
					top = seq
				}
				m = nil
				if len(batch) < indexBatch {
					select {
					case m = <-msgs:
					default:
					}
				}
			}
			if top > 0 {
				if err := r.idx.add(batch, top); err != nil {
					return err
				}
			}
		}
	}
}

// entryOf is the index entry of a log message; ok is false for a message
// the index has no use for (seq is still its sequence, 0 if unknown).
func entryOf(m jetstream.Msg) (e entry, seq uint64, ok bool) {
	meta, err := m.Metadata()
	if err != nil {
		return e, 0, false
	}
	seq = meta.Sequence.Stream
	key, kok := store.EndpointOfLogSubject(m.Subject())
	id, starts := store.LogEventOf(m.Headers())
	if !kok || id == "" {
		return e, seq, false
	}
	return entry{ns: key.Namespace, webhook: key.Name, id: id, starts: starts, seq: seq, time: meta.Timestamp}, seq, true
}

// pruneNow forgets the deliveries whose records all aged out.
func (r *Reader) pruneNow(ctx context.Context) error {
	info, err := r.stream(ctx)
	if err != nil {
		return err
	}
	n, err := r.idx.prune(info.State.FirstSeq)
	if n > 0 {
		r.opts.Logger.V(1).Info("Pruned the delivery log's index", "deliveries", n, "firstSequence", info.State.FirstSeq)
	}
	return err
}
