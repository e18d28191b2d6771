package delivery

import (
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/store"
)

// maxOutcomeBatch bounds the outcomes stored in one message (an outcome's
// JSON is under 2 KiB, its error text capped at 1 KiB, so a message stays
// far below NATS's 1 MiB default payload limit).
const maxOutcomeBatch = 128

// pendingOutcome is one endpoint's outcomes waiting to be stored; done
// receives the result.
type pendingOutcome struct {
	ocs  []*store.Outcome
	done chan error
}

// recordOutcomes stores ocs, the outcomes of one endpoint, in the outcomes
// stream and returns once JetStream acknowledged them (or failed to).
// Outcomes recorded at the same time are stored together, one message per
// endpoint: under load one write carries the outcomes of many deliveries,
// and the aggregator decodes one message for them. Only Start's outcome
// recorder takes them, so this must be called while the dispatcher runs (by
// endpoint workers, which Start stops before the recorder).
func (d *Dispatcher) recordOutcomes(ocs []*store.Outcome) error {
	if len(ocs) == 0 {
		return nil
	}
	p := pendingOutcome{ocs: ocs, done: make(chan error, 1)}
	d.outcomes <- p
	return <-p.done
}

// runOutcomeRecorder stores what recordOutcomes is given until quit is
// closed, then stores what is left and returns.
func (d *Dispatcher) runOutcomeRecorder(quit <-chan struct{}) {
	batch := make([]pendingOutcome, 0, maxOutcomeBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-d.outcomes:
			batch = append(batch, p)
		case <-quit:
			for {
				select {
				case p := <-d.outcomes:
					d.storeOutcomes([]pendingOutcome{p})
				default:
					return
				}
			}
		}
		// Take whatever else is waiting: while one batch is being stored, the
		// next one fills, so batches grow with the load and stay single
		// outcomes (no added wait) when it is light.
		n := len(batch[0].ocs)
	fill:
		for n < maxOutcomeBatch {
			select {
			case p := <-d.outcomes:
				batch = append(batch, p)
				n += len(p.ocs)
			default:
				break fill
			}
		}
		// Under load (a message's worth of outcomes at a time: its
		// deliveries shared a group commit) wait up to the group commit
		// delay for the next message's, so one write carries both. The
		// deliveries are done; only their acknowledgement waits.
		if d.recorderDelay > 0 && n > 1 && n < maxOutcomeBatch {
			batch = d.lingerOutcomes(batch, n, quit)
		}
		d.storeOutcomes(batch)
	}
}

// lingerOutcomes adds to batch, which holds n outcomes, what arrives within
// d.recorderDelay, until it holds maxOutcomeBatch outcomes or quit is closed.
func (d *Dispatcher) lingerOutcomes(batch []pendingOutcome, n int, quit <-chan struct{}) []pendingOutcome {
	timer := time.NewTimer(d.recorderDelay)
	defer timer.Stop()
	for n < maxOutcomeBatch {
		select {
		case p := <-d.outcomes:
			batch = append(batch, p)
			n += len(p.ocs)
		case <-timer.C:
			return batch
		case <-quit:
			return batch
		}
	}
	return batch
}

// storeOutcomes publishes the batch as one message per endpoint (more when
// an endpoint has over maxOutcomeBatch outcomes in it), waits for
// JetStream's acknowledgements and tells every waiting caller.
func (d *Dispatcher) storeOutcomes(batch []pendingOutcome) {
	type group struct {
		ocs     []*store.Outcome
		futures []jetstream.PubAckFuture
		err     error
	}
	var order []types.UID
	groups := map[types.UID]*group{}
	groupOf := func(p *pendingOutcome) *group { return groups[p.ocs[0].UID] }
	for i := range batch {
		uid := batch[i].ocs[0].UID
		g := groups[uid]
		if g == nil {
			g = &group{}
			groups[uid] = g
			order = append(order, uid)
		}
		g.ocs = append(g.ocs, batch[i].ocs...)
	}
	for _, uid := range order {
		g := groups[uid]
		for ocs := range slices.Chunk(g.ocs, maxOutcomeBatch) {
			first := ocs[0]
			f, err := d.js.PublishMsgAsync(&nats.Msg{Subject: store.OutcomeSubject(first.Namespace, first.Name), Data: store.EncodeOutcomes(ocs)})
			if err != nil {
				g.err = err
				break
			}
			g.futures = append(g.futures, f)
			d.dlog.attempts(ocs)
		}
	}
	for _, uid := range order {
		g := groups[uid]
		for _, f := range g.futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				if g.err == nil {
					g.err = err
				}
			}
		}
	}
	for i := range batch {
		batch[i].done <- groupOf(&batch[i]).err
	}
}
