package dispatch

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"
)

// maxOutcomeBatch bounds the outcomes stored in one message (an outcome's
// JSON is under 2 KiB, its error text capped at 1 KiB, so a message stays
// far below NATS's 1 MiB default payload limit).
const maxOutcomeBatch = 128

// pendingOutcome is an outcome waiting to be stored; done receives the result.
type pendingOutcome struct {
	oc   *outcome
	done chan error
}

// recordOutcome stores oc in the outcomes stream and returns once JetStream
// acknowledged it (or failed to). Outcomes recorded at the same time are
// stored together, one message per endpoint: under load one write carries
// the outcomes of many deliveries, and the aggregator decodes one message
// for them. Only Start's outcome recorder takes them, so this must be
// called while the dispatcher runs (by endpoint workers, which Start stops
// before the recorder).
func (d *Dispatcher) recordOutcome(oc *outcome) error {
	p := pendingOutcome{oc: oc, done: make(chan error, 1)}
	d.outcomes <- p
	return <-p.done
}

// runOutcomeRecorder stores what recordOutcome is given until quit is
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
	fill:
		for len(batch) < maxOutcomeBatch {
			select {
			case p := <-d.outcomes:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		d.storeOutcomes(batch)
	}
}

// storeOutcomes publishes the batch as one message per endpoint, waits for
// JetStream's acknowledgements and tells every waiting delivery.
func (d *Dispatcher) storeOutcomes(batch []pendingOutcome) {
	type group struct {
		members []int
		future  jetstream.PubAckFuture
		err     error
	}
	var order []types.UID
	groups := map[types.UID]*group{}
	for i := range batch {
		uid := batch[i].oc.UID
		g := groups[uid]
		if g == nil {
			g = &group{}
			groups[uid] = g
			order = append(order, uid)
		}
		g.members = append(g.members, i)
	}
	for _, uid := range order {
		g := groups[uid]
		ocs := make([]*outcome, len(g.members))
		for j, i := range g.members {
			ocs[j] = batch[i].oc
		}
		data, err := json.Marshal(ocs)
		if err != nil {
			g.err = fmt.Errorf("encoding outcomes: %w", err)
			continue
		}
		first := ocs[0]
		g.future, g.err = d.js.PublishMsgAsync(&nats.Msg{Subject: outcomeSubject(first.Namespace, first.Name), Data: data})
	}
	for _, uid := range order {
		g := groups[uid]
		if g.err == nil {
			select {
			case <-g.future.Ok():
			case err := <-g.future.Err():
				g.err = err
			}
		}
		for _, i := range g.members {
			batch[i].done <- g.err
		}
	}
}
