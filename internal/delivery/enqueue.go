package delivery

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/idempotency"
	"github.com/wablast/webhook-operator/internal/store"
)

// enqueuePlan is what Enqueue stores for a request's events.
type enqueuePlan struct {
	// results has one entry per event, in order; Enqueue fills in what
	// the store answers (duplicates, subscribers of events with an id).
	results []EnqueueResult
	// withID are the events with an id: each goes to the events stream,
	// whose fan-out makes the deliveries.
	withID []eventWrite
	// direct are the deliveries of the events without an id, one entry per
	// subscribed endpoint in the order first met, deliveries in event order.
	direct []endpointDeliveries
}

// eventWrite is one event with an id and its delivered body.
type eventWrite struct {
	index int
	body  []byte
}

// endpointDeliveries are deliveries to one endpoint.
type endpointDeliveries struct {
	ep *endpoint.Endpoint
	ds []store.Delivery
}

// planEnqueue decides what Enqueue stores for events accepted at
// acceptedAt: an event with an id goes to the events stream (its id is the
// idempotency key; the fan-out finds its subscribers), and an event without
// one cannot be a duplicate, so its deliveries, one per endpoint that
// subscribers lists for its namespace and type, are stored directly.
func planEnqueue(events []Event, acceptedAt string, subscribers func(ns, eventType string) []endpoint.Endpoint) (enqueuePlan, error) {
	p := enqueuePlan{results: make([]EnqueueResult, len(events))}
	byUID := map[types.UID]int{}
	for i := range events {
		ev := &events[i]
		p.results[i].ID = ev.ID
		body, err := ev.Envelope()
		if err != nil {
			return enqueuePlan{}, fmt.Errorf("encoding event %s: %w", ev.ID, err)
		}
		if ev.IdempotencyKey {
			p.withID = append(p.withID, eventWrite{index: i, body: body})
			continue
		}
		subs := endpoint.Matching(subscribers(ev.Namespace, ev.Type), ev.filterEvent())
		p.results[i].Subscribers = len(subs)
		for j := range subs {
			k, ok := byUID[subs[j].UID]
			if !ok {
				k = len(p.direct)
				byUID[subs[j].UID] = k
				p.direct = append(p.direct, endpointDeliveries{ep: &subs[j]})
			}
			p.direct[k].ds = append(p.direct[k].ds, store.Delivery{EventID: ev.ID, EventType: ev.Type, AcceptedAt: acceptedAt, Body: body})
		}
	}
	return p, nil
}

// Enqueue implements Enqueuer: it returns once JetStream acknowledged every
// message it wrote.
//
// An event posted with an id goes to the events stream, whose duplicate
// window (with the on-disk index of the embedded store, 24 hours) makes the
// id an idempotency key, and the fan-out turns it into deliveries. An event
// without one skips that hop: its deliveries are stored here and are what
// the 202 acknowledges. Either way the subscribers are the ones registered
// when the event was accepted, give or take the fan-out's milliseconds.
func (d *Dispatcher) Enqueue(ctx context.Context, events []Event) ([]EnqueueResult, error) {
	select {
	case <-d.opts.Registry.Synced():
	default:
		// Before the registry is rebuilt, subscribers are unknown.
		return nil, fmt.Errorf("%w: the endpoint registry is still loading", store.ErrUnavailable)
	}
	if err := d.opts.Store.Writable(); err != nil {
		return nil, err // full: refused until deliveries drain it
	}
	nowT := d.opts.Now().UTC()
	plan, err := planEnqueue(events, nowT.Format(time.RFC3339Nano), d.opts.Registry.Subscribers)
	if err != nil {
		return nil, err
	}
	results := plan.results
	// futures are the writes not made by the batcher; withID holds, for
	// each, the index of its event with an id, or -1 for a delivery.
	futures, withID, err := d.publishEvents(events, &plan, nowT)
	if err != nil {
		return nil, err
	}
	writes, err := d.storeDeliveries(plan.direct, &futures, &withID)
	if err != nil {
		return nil, err
	}
	for _, w := range writes {
		select {
		case <-w.done:
			if w.err != nil {
				return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, w.err)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
		}
	}
	index := d.opts.Store.Index()
	var recorded []idempotency.Entry
	for k, f := range futures {
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case err := <-f.Err():
			return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, ctx.Err())
		}
		if i := withID[k]; i >= 0 {
			results[i].Duplicate = ack.Duplicate
			results[i].Subscribers = endpoint.CountMatching(d.opts.Registry.Subscribers(events[i].Namespace, events[i].Type), events[i].filterEvent())
			if index != nil && !ack.Duplicate {
				recorded = append(recorded, idempotency.Entry{Key: events[i].Namespace + "/" + events[i].ID, At: nowT})
			}
		}
	}
	// Stored: remember the ids before answering. Should this fail, the
	// producer's retry is caught by the events stream's own window.
	if index != nil {
		if err := index.Record(recorded...); err != nil {
			return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	keys := make([]types.NamespacedName, len(plan.direct))
	var wrote int64
	for i, g := range plan.direct {
		keys[i] = g.ep.Key()
		for j := range g.ds {
			wrote += int64(len(g.ds[j].Body))
		}
	}
	for _, e := range plan.withID {
		wrote += int64(len(e.body)) // its deliveries come with the fan-out
	}
	d.opts.Store.Wrote(wrote)
	d.want(keys...)
	if d.opts.Metrics != nil {
		d.opts.Metrics.accepted(events, results)
	}
	return results, nil
}

// publishEvents writes the plan's events with an id to the events stream,
// but for those the on-disk index has seen within its window: they are
// answered as duplicates at once. It returns the writes and, for each, the
// index of its event.
func (d *Dispatcher) publishEvents(events []Event, plan *enqueuePlan, now time.Time) ([]jetstream.PubAckFuture, []int, error) {
	if len(plan.withID) == 0 {
		return nil, nil, nil
	}
	index := d.opts.Store.Index()
	accepted := now.Format(time.RFC3339Nano)
	futures := make([]jetstream.PubAckFuture, 0, len(plan.withID))
	withID := make([]int, 0, len(plan.withID))
	for _, e := range plan.withID {
		ev := &events[e.index]
		if index != nil {
			// The on-disk index keeps the window's ids (the events
			// stream's own window is only dedupeGuard long).
			seen, err := index.Seen(ev.Namespace+"/"+ev.ID, now)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
			}
			if seen {
				plan.results[e.index].Duplicate = true
				plan.results[e.index].Subscribers = endpoint.CountMatching(d.opts.Registry.Subscribers(ev.Namespace, ev.Type), ev.filterEvent())
				continue
			}
		}
		msg := nats.NewMsg(store.EventSubject(ev.Namespace))
		msg.Data = e.body
		msg.Header.Set(store.HdrEventID, ev.ID)
		msg.Header.Set(store.HdrEventType, ev.Type)
		msg.Header.Set(store.HdrAcceptedAt, accepted)
		f, err := d.js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.Namespace+"/"+ev.ID))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		futures = append(futures, f)
		withID = append(withID, e.index)
	}
	return futures, withID, nil
}

// storeDeliveries hands the deliveries to the batcher, which stores them
// together with those of concurrent requests to the same endpoints, or
// else writes them one per message, appending those writes to futures
// (with -1 in withID).
func (d *Dispatcher) storeDeliveries(direct []endpointDeliveries, futures *[]jetstream.PubAckFuture, withID *[]int) ([]*batchWrite, error) {
	var writes []*batchWrite
	for _, g := range direct {
		if d.batcher != nil {
			writes = append(writes, d.batcher.add(g.ep.Namespace, g.ep, g.ds)...)
			continue
		}
		d.dlog.stored(g.ep.Namespace, g.ep.Name, g.ep.UID, g.ds, "")
		for i := range g.ds {
			f, err := d.js.PublishMsgAsync(store.DeliveryMsg(g.ep.Namespace, g.ep.Name, g.ep.UID, &g.ds[i]))
			if err != nil {
				return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
			}
			*futures = append(*futures, f)
			*withID = append(*withID, -1)
		}
	}
	return writes, nil
}
