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
	// withID are the events with an id that go to the events stream,
	// whose fan-out makes the deliveries (with an external NATS, whose
	// duplicate window is the idempotency window).
	withID []eventWrite
	// recorded are the indexes of the events with an id whose deliveries
	// are stored directly (with the on-disk index): their ids are recorded
	// in the index once the deliveries are stored.
	recorded []int
	// direct are the deliveries stored at once, one entry per subscribed
	// endpoint in the order first met, deliveries in event order.
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

// idPlan says how planEnqueue treats the events with an id.
type idPlan struct {
	// direct: their deliveries are stored at once, like those of events
	// without an id (the on-disk index keeps the idempotency window).
	// Otherwise they go to the events stream.
	direct bool
	// duplicate[i]: event i was accepted before (or earlier in the same
	// request) and is answered as a duplicate, not stored (direct only).
	duplicate []bool
}

// planEnqueue decides what Enqueue stores for events accepted at
// acceptedAt. The deliveries of an event, one per endpoint that subscribers
// lists for its namespace and type, are stored directly, unless it has an
// id and ids.direct is false: then it goes to the events stream, whose
// duplicate window makes the id an idempotency key and whose fan-out finds
// its subscribers.
func planEnqueue(events []Event, acceptedAt string, subscribers func(ns, eventType string) []endpoint.Endpoint, ids idPlan) (enqueuePlan, error) {
	p := enqueuePlan{results: make([]EnqueueResult, len(events))}
	byUID := map[types.UID]int{}
	for i := range events {
		ev := &events[i]
		p.results[i].ID = ev.ID
		if ev.IdempotencyKey && ids.direct && ids.duplicate[i] {
			p.results[i].Duplicate = true
			p.results[i].Subscribers = endpoint.CountMatching(subscribers(ev.Namespace, ev.Type), ev.filterEvent())
			continue
		}
		body, err := ev.Envelope()
		if err != nil {
			return enqueuePlan{}, fmt.Errorf("encoding event %s: %w", ev.ID, err)
		}
		if ev.IdempotencyKey {
			if !ids.direct {
				p.withID = append(p.withID, eventWrite{index: i, body: body})
				continue
			}
			p.recorded = append(p.recorded, i)
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
// With the embedded store, an event's deliveries are stored here, whether
// or not it has an id, and are what the 202 acknowledges. The id of an event
// posted with one is its idempotency key: the on-disk index (24 hours) says
// whether it was accepted before; if not, its deliveries are stored and
// then its id is recorded, before the answer. A crash between the two
// leaves an event stored whose post was never answered: the producer's
// retry stores it again, and it is delivered twice with the same
// webhook-id, as an attempt cut off by a crash is (docs/operations.md).
//
// With an external NATS, an event with an id goes to the events stream,
// whose duplicate window (the idempotency window, kept by the NATS
// servers) makes the id an idempotency key, and the fan-out turns it into
// deliveries. Either way the subscribers are the ones registered when the
// event was accepted, give or take the fan-out's milliseconds.
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
	index := d.opts.Store.Index()
	ids := idPlan{direct: index != nil}
	if ids.direct {
		held, duplicate, err := d.claimIDs(ctx, events, index, nowT)
		if err != nil {
			return nil, err
		}
		stored := false
		defer func() { held.release(stored) }()
		ids.duplicate = duplicate
		results, err := d.enqueue(ctx, events, nowT, ids)
		stored = err == nil
		return results, err
	}
	return d.enqueue(ctx, events, nowT, ids)
}

// claimIDs claims the ids of the events posted with one (see keyClaims)
// and finds those accepted before: by another request that held the claim,
// earlier in this request, or within the window by the on-disk index.
func (d *Dispatcher) claimIDs(ctx context.Context, events []Event, index *idempotency.Index, now time.Time) (*heldKeys, []bool, error) {
	var keys []string
	for i := range events {
		if events[i].IdempotencyKey {
			keys = append(keys, events[i].Namespace+"/"+events[i].ID)
		}
	}
	if len(keys) == 0 {
		return nil, nil, nil
	}
	held, storedByOthers, err := d.claims.claim(ctx, keys)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	duplicate := make([]bool, len(events))
	first := make(map[string]bool, len(keys))
	k := 0
	for i := range events {
		if !events[i].IdempotencyKey {
			continue
		}
		key := keys[k]
		k++
		if first[key] || storedByOthers[key] {
			duplicate[i] = true
			continue
		}
		first[key] = true
		seen, err := index.Seen(key, now)
		if err != nil {
			held.release(false)
			return nil, nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		duplicate[i] = seen
	}
	return held, duplicate, nil
}

// enqueue stores the events as ids says and answers their results.
func (d *Dispatcher) enqueue(ctx context.Context, events []Event, nowT time.Time, ids idPlan) ([]EnqueueResult, error) {
	plan, err := planEnqueue(events, nowT.Format(time.RFC3339Nano), d.opts.Registry.Subscribers, ids)
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
		}
	}
	// Stored: remember the ids before answering (see Enqueue).
	if len(plan.recorded) > 0 {
		recorded := make([]idempotency.Entry, len(plan.recorded))
		for k, i := range plan.recorded {
			recorded[k] = idempotency.Entry{Key: events[i].Namespace + "/" + events[i].ID, At: nowT}
		}
		if err := d.opts.Store.Index().Record(recorded...); err != nil {
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

// publishEvents writes the plan's events with an id to the events stream
// (with an external NATS). It returns the writes and, for each, the index
// of its event.
func (d *Dispatcher) publishEvents(events []Event, plan *enqueuePlan, now time.Time) ([]jetstream.PubAckFuture, []int, error) {
	if len(plan.withID) == 0 {
		return nil, nil, nil
	}
	accepted := now.Format(time.RFC3339Nano)
	futures := make([]jetstream.PubAckFuture, 0, len(plan.withID))
	withID := make([]int, 0, len(plan.withID))
	for _, e := range plan.withID {
		ev := &events[e.index]
		subj := store.EventSubject(ev.Namespace)
		if anyPerKey(d.opts.Registry.Subscribers(ev.Namespace, ev.Type)) {
			subj = store.OrderedEventSubject(ev.Namespace)
		}
		msg := nats.NewMsg(subj)
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

// anyPerKey reports whether one of eps is a PerKey endpoint.
func anyPerKey(eps []endpoint.Endpoint) bool {
	for i := range eps {
		if eps[i].Policy.PerKey {
			return true
		}
	}
	return false
}
