package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

// Ordered delivery (spec.delivery.ordering: PerKey).
//
// A PerKey endpoint's worker does not attempt what its consumer hands it:
// it moves each delivery, in the order they were stored, into the queue of
// its ordering key, a subject of WEBHOOK_ORDERED (move), and acknowledges
// the message once JetStream stored them all. Each key with deliveries
// queued is a lane: its head, the first message of its subject, is the
// only delivery of the key attempted; once it succeeded or failed for good
// it is deleted from the stream and the next message becomes the head. A
// head that is to be retried stays where it is, with its attempts and due
// time in the key's state subject, so it holds back its own key only;
// lanes whose heads are due are worked on by maxInFlight runners.
//
// Everything a lane needs is in the stream: a worker that starts (after a
// restart, a kill -9, or on a new leader) finds the keys with deliveries
// queued and goes on from their heads. Only one replica may work on an
// endpoint's lanes at a time, so PerKey endpoints are delivered by the
// leader alone (see planSync).

// orderLanes are one endpoint's lanes.
type orderLanes struct {
	w      *endpointWorker
	stream jetstream.Stream

	mu     sync.Mutex
	cond   *sync.Cond
	lanes  map[string]*lane
	ready  []*lane
	closed bool
	wg     sync.WaitGroup

	// At most maxLanes lanes are kept. A key met while they are full
	// (overflow) gets none: its deliveries wait in the stream until
	// discover, reading the stream forward from cursor, finds it once lanes
	// are free. refused counts the keys turned away, so that a discovery
	// that saw the end of the stream knows whether one came meanwhile.
	maxLanes    int
	overflow    bool
	refused     int
	cursor      uint64
	discovering bool
}

// maxLanes bounds the lanes an endpoint keeps in memory (about 200 bytes
// each): through a long outage with a key per message, the keys beyond
// it wait in the stream, not in memory. A variable for tests.
var maxLanes = 50_000

// lane is one ordering key (by its token) with deliveries queued.
type lane struct {
	token string
	// next is where its head is looked up from: the head is the first
	// message of its subject at or after it.
	next uint64
	// queued: ready, with a runner, or waiting for its timer; again: kicked
	// meanwhile, so an empty subject is looked at once more before the lane
	// is dropped (a delivery may have been queued just then).
	queued, again bool
	timer         *time.Timer
	// state is the head's retry state as last stored; checked tells
	// whether the stored one was read since the lanes started.
	state   store.HeadState
	checked bool
	// deleting is the sequence of a finished head whose removal failed:
	// it is not attempted again, only removed.
	deleting uint64
	// head is the lane's first delivery as the move stored it, when the
	// lane was created by that move: read without a get.
	head *movedHead
}

// movedHead is a delivery a move just stored, at stream sequence seq.
type movedHead struct {
	seq uint64
	dl  store.Delivery
}

// maxCachedHeads bounds the lanes waiting for a runner with their head in
// memory: beyond it a new lane reads its head from the stream.
const maxCachedHeads = 1024

// startLanes starts the worker's lanes and has them find the keys that
// have deliveries queued; when they run already, it has them go on finding
// those they had no room for. The finding runs on its own goroutine: it
// may read a long backlog, and its callers are the sync loop's.
func (w *endpointWorker) startLanes(ctx context.Context) error {
	if o := w.lanes.Load(); o != nil {
		o.discoverLater(ctx)
		return nil
	}
	stream, err := w.env.js.Stream(ctx, store.StreamOrdered)
	if err != nil {
		return fmt.Errorf("finding stream %s: %w", store.StreamOrdered, err)
	}
	o := &orderLanes{w: w, stream: stream, lanes: map[string]*lane{}, maxLanes: maxLanes, overflow: true, cursor: 1}
	o.cond = sync.NewCond(&o.mu)
	if !w.lanes.CompareAndSwap(nil, o) {
		return nil
	}
	for range max(w.ep.Load().Policy.MaxInFlight, 1) {
		o.wg.Go(o.run)
	}
	o.discoverLater(ctx)
	return nil
}

// discoverLater runs discover on a goroutine of its own, logging a failure
// (it is tried again when lanes free up, or within a minute).
func (o *orderLanes) discoverLater(ctx context.Context) {
	go func() {
		if err := o.discover(ctx); err != nil && ctx.Err() == nil {
			o.w.env.log.Error(err, "Looking for ordered deliveries failed; looking again within a minute", "namespace", o.w.ns, "name", o.w.name)
		}
	}()
}

// discover reads the endpoint's key queues forward from the cursor (the
// headers only) and makes a lane for each key it meets without one, until
// the lanes are full (the cursor then stays at that message) or it reached
// the end. It runs at the start (the whole stream), when lanes were
// refused and room was made, and every minute (scanOrdered) while some
// were; one at a time.
func (o *orderLanes) discover(ctx context.Context) error {
	o.mu.Lock()
	if o.discovering || !o.overflow || o.closed {
		o.mu.Unlock()
		return nil
	}
	o.discovering = true
	from, refused := o.cursor, o.refused
	o.mu.Unlock()
	end, err := o.scan(ctx, from)
	o.mu.Lock()
	o.discovering = false
	if end && o.refused == refused {
		o.overflow = false // every key met so far has its lane
	}
	o.mu.Unlock()
	return err
}

// scan is discover's reading: it reports whether it reached the end.
func (o *orderLanes) scan(ctx context.Context, from uint64) (bool, error) {
	w := o.w
	filter := store.OrderedSubjects(w.ns, w.name)
	if _, err := o.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(filter)); errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("looking for ordered deliveries: %w", err)
	}
	cons, err := o.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from, HeadersOnly: true,
	})
	if err != nil {
		return false, fmt.Errorf("reading the ordered deliveries: %w", err)
	}
	for {
		// Batches that wait at most a second: the lanes delete the
		// messages they finish meanwhile, so one counted as pending may
		// never come.
		batch, err := cons.Fetch(512, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return false, fmt.Errorf("reading the ordered deliveries: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return false, err
			}
			seq := meta.Sequence.Stream
			if _, token, ok := store.OrderedKeyOfSubject(m.Subject()); ok && !o.found(token, seq) {
				return false, nil // full: the cursor stays here
			}
			if meta.NumPending == 0 {
				return true, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return false, fmt.Errorf("reading the ordered deliveries: %w", err)
		}
		if n == 0 {
			return true, nil
		}
	}
}

// found makes a lane for the key token met at seq by discover, unless the
// lanes are full (false): the cursor then stays at seq, or else moves past it.
func (o *orderLanes) found(token string, seq uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lanes[token] == nil && len(o.lanes) >= o.maxLanes {
		o.cursor = seq
		return false
	}
	o.cursor = seq + 1
	o.kickLocked(token, nil)
	return true
}

// kick tells the lane of token that its queue may have a head to work on.
// moved, when the kick comes from a move, is the first delivery it stored
// for token (nil when that was a duplicate): a lane the move creates has
// it as its head unless some key was turned away (overflow), since the
// lanes start with every key that has deliveries queued, and a lane is
// dropped only once its queue is empty.
func (o *orderLanes) kick(token string, moved *movedHead) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.kickLocked(token, moved)
}

func (o *orderLanes) kickLocked(token string, moved *movedHead) {
	l := o.lanes[token]
	if l == nil && len(o.lanes) >= o.maxLanes {
		// Full: discover finds this key once there is room.
		o.overflow = true
		o.refused++
		return
	}
	if l == nil {
		l = &lane{token: token, next: 1}
		if moved != nil && !o.overflow {
			// Every key with deliveries queued has its lane (none was
			// turned away since a discovery read to the end): the key's
			// queue was empty, the move's delivery is its head, and no
			// retry state can name it.
			l.checked = true
			if len(o.ready) < maxCachedHeads {
				l.head = moved
			}
		}
		o.lanes[token] = l
	}
	if l.queued {
		l.again = true
		return
	}
	l.queued = true
	o.pushLocked(l)
}

func (o *orderLanes) pushLocked(l *lane) {
	if o.closed {
		return
	}
	o.ready = append(o.ready, l)
	o.cond.Signal()
}

// push makes a queued lane ready again.
func (o *orderLanes) push(l *lane) {
	o.mu.Lock()
	o.pushLocked(l)
	o.mu.Unlock()
}

// later makes a queued lane ready again after d.
func (o *orderLanes) later(l *lane, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	l.timer = time.AfterFunc(max(d, 0), func() { o.push(l) })
}

// drop removes a lane whose queue is empty, unless it was kicked meanwhile.
// Once a quarter of the lanes is free after some were refused, the keys
// turned away are looked for.
func (o *orderLanes) drop(l *lane) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l.again {
		l.again = false
		o.pushLocked(l)
		return
	}
	delete(o.lanes, l.token)
	if o.overflow && !o.discovering && !o.closed && len(o.lanes) <= o.maxLanes*3/4 {
		o.discoverLater(o.w.ctx)
	}
}

// empty reports whether no key has deliveries queued.
func (o *orderLanes) empty() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.lanes) == 0
}

// close stops the runners (after the worker's context ended) and the timers.
func (o *orderLanes) close() {
	o.mu.Lock()
	o.closed = true
	for _, l := range o.lanes {
		if l.timer != nil {
			l.timer.Stop()
		}
	}
	o.ready = nil
	o.cond.Broadcast()
	o.mu.Unlock()
	o.wg.Wait()
}

func (o *orderLanes) run() {
	for {
		o.mu.Lock()
		for len(o.ready) == 0 && !o.closed {
			o.cond.Wait()
		}
		if o.closed {
			o.mu.Unlock()
			return
		}
		l := o.ready[0]
		o.ready[0] = nil
		o.ready = o.ready[1:]
		o.mu.Unlock()
		o.step(l)
	}
}

// step works on a lane's head: looks it up, waits for its due time,
// attempts it and, once it is done, removes it and goes on with the next.
func (o *orderLanes) step(l *lane) {
	w := o.w
	ctx := w.ctx
	if ctx.Err() != nil {
		return
	}
	w.touch()
	if l.deleting != 0 {
		if !o.remove(ctx, l, l.deleting) {
			return
		}
	}
	ep := w.ep.Load()
	h, ok := o.loadHead(ctx, l)
	if !ok {
		return
	}
	seq, ds, derr := h.seq, h.ds, h.err
	l.next = seq
	if h.uid != string(ep.UID) || derr != nil || len(ds) != 1 {
		// Left for an earlier resource of the same name, or unreadable.
		if derr != nil {
			w.env.log.Error(derr, "Dropping an ordered message that carries no readable delivery", "namespace", w.ns, "name", w.name, "seq", seq)
		}
		if o.remove(ctx, l, seq) {
			o.push(l)
		}
		return
	}
	dl := &ds[0]
	if !l.checked {
		if sm, err := o.stream.GetLastMsgForSubject(ctx, store.OrderStateSubject(w.ns, w.name, l.token)); err == nil {
			if st, perr := store.ParseHeadState(sm.Data); perr == nil {
				l.state = st
			}
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			if ctx.Err() == nil {
				o.later(l, time.Second)
			}
			return
		}
		l.checked = true
	}
	if l.state.Seq == seq {
		dl.Attempt = l.state.Attempts
		if wait := l.state.Due.Sub(w.env.now()); wait > 0 {
			o.later(l, wait)
			return
		}
	}
	if err := w.attempts.Acquire(ctx, 1); err != nil {
		return // stopping
	}
	// The retry state is stored after the attempt's outcome, as a retry of
	// an unordered delivery is: a crash in between makes the attempt again
	// (its outcome counted once), rather than leave it uncounted.
	var next store.HeadState
	res := w.handle(ctx, ep, dl, func(_ context.Context, _ *store.Delivery, attempt int, at time.Time) error {
		next = store.HeadState{Seq: seq, Attempts: attempt, Due: at}
		return nil
	})
	w.attempts.Release(1)
	out := []settlement{res}
	w.recordOutcomes(out)
	res = out[0]
	switch {
	case !res.done:
		if ctx.Err() == nil {
			o.later(l, max(res.delay, 100*time.Millisecond))
		}
	case res.oc != nil && res.oc.Result == webhooksv1alpha1.ResultRetrying:
		if _, err := w.env.js.PublishMsg(ctx, store.HeadStateMsg(w.ns, w.name, l.token, next)); err != nil && ctx.Err() == nil {
			// Kept in memory: only a restart before the next attempt
			// makes this one again.
			w.env.log.Error(err, "Storing the retry state of an ordered delivery failed", "namespace", w.ns, "name", w.name)
		}
		l.state = next
		o.later(l, res.oc.NextAttempt.Sub(w.env.now()))
	default: // succeeded or failed for good: the next one is the head
		if o.remove(ctx, l, seq) {
			o.push(l)
		}
	}
}

// laneHead is a lane's first message: its sequence, the deliveries it
// carries (err when they do not decode) and its endpoint's UID.
type laneHead struct {
	seq uint64
	ds  []store.Delivery
	uid string
	err error
}

// loadHead returns the lane's head; ok is false when there is none (the
// lane is dropped) or it could not be read (the lane tries again later).
func (o *orderLanes) loadHead(ctx context.Context, l *lane) (laneHead, bool) {
	w := o.w
	if h := l.head; h != nil {
		l.head = nil
		if h.seq >= l.next {
			return laneHead{seq: h.seq, ds: []store.Delivery{h.dl}, uid: string(w.uid)}, true
		}
	}
	msg, err := o.stream.GetMsg(ctx, l.next, jetstream.WithGetMsgSubject(store.OrderedSubject(w.ns, w.name, l.token)))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		o.drop(l)
		return laneHead{}, false
	case err != nil:
		if ctx.Err() == nil {
			w.env.log.Error(err, "Reading the next ordered delivery failed; trying again in a second", "namespace", w.ns, "name", w.name)
			o.later(l, time.Second)
		}
		return laneHead{}, false
	}
	ds, derr := store.DeliveriesOf(msg.Header, msg.Data)
	return laneHead{seq: msg.Sequence, ds: ds, uid: msg.Header.Get(store.HdrEndpointUID), err: derr}, true
}

// remove deletes a finished head (and its state) from the stream and moves
// the lane past it; should that fail, the lane only retries the removal.
func (o *orderLanes) remove(ctx context.Context, l *lane, seq uint64) bool {
	w := o.w
	if err := o.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) {
		l.deleting = seq
		if ctx.Err() == nil {
			w.env.log.Error(err, "Removing a finished ordered delivery failed; trying again in a second", "namespace", w.ns, "name", w.name)
			o.later(l, time.Second)
		}
		return false
	}
	l.deleting = 0
	if l.state.Seq == seq {
		// Best effort: a state left behind names a head that is gone, and is ignored.
		_ = o.stream.Purge(ctx, jetstream.WithPurgeSubject(store.OrderStateSubject(w.ns, w.name, l.token)))
		l.state = store.HeadState{}
	}
	l.next = seq + 1
	return true
}

// move queues the deliveries of m under their ordering keys, in order, and
// acknowledges m once they are all stored. It runs in the consumer's
// callback, one message after the other, so the keys' queues keep the
// order the deliveries were stored in. A failed write is tried again
// until it succeeds or the worker stops (m is then handed out again).
func (w *endpointWorker) move(m jetstream.Msg) {
	ep, ds, ok := w.open(m)
	if !ok {
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Nak()
		return
	}
	tokens := make([]string, len(ds))
	for i := range ds {
		key, kerr := ep.OrderingKey.Key(ds[i].EventType, ds[i].Body)
		if kerr != nil {
			w.env.log.V(1).Info("The ordering key failed on an event; it is ordered under the empty key", "namespace", w.ns, "name", w.name, "event", ds[i].EventID, "error", kerr.Error())
		}
		tokens[i] = store.OrderKeyToken(key)
	}
	var seqs []uint64
	for {
		if seqs, err = w.storeOrdered(ep.UID, meta.Sequence.Stream, ds, tokens); err == nil {
			break
		}
		if w.ctx.Err() != nil {
			_ = m.Nak()
			return
		}
		w.env.log.Error(err, "Queueing deliveries under their ordering keys failed; trying again in a second", "namespace", w.ns, "name", w.name)
		select {
		case <-time.After(time.Second):
		case <-w.ctx.Done():
			_ = m.Nak()
			return
		}
	}
	_ = m.Ack()
	w.env.msgDone(m)
	if o := w.lanes.Load(); o != nil {
		first := make(map[string]bool, len(tokens))
		for i, t := range tokens {
			if first[t] {
				o.kick(t, nil)
				continue
			}
			first[t] = true
			var moved *movedHead
			if seqs[i] != 0 {
				moved = &movedHead{seq: seqs[i], dl: ds[i]}
			}
			o.kick(t, moved)
		}
	}
}

// storeOrdered publishes the deliveries to their keys' queues, in order,
// and waits for every acknowledgement; it returns the stream sequence of
// each, 0 for a duplicate. Message IDs made of the stored message's
// sequence keep a repeated move (after a crash before m's acknowledgement)
// from queueing them twice.
func (w *endpointWorker) storeOrdered(uid types.UID, seq uint64, ds []store.Delivery, tokens []string) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), store.PublishAckTimeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(ds))
	for i := range ds {
		f, err := w.env.js.PublishMsgAsync(store.OrderedMsg(w.ns, w.name, uid, tokens[i], &ds[i]),
			jetstream.WithMsgID(fmt.Sprintf("mv.%d.%d", seq, i)))
		if err != nil {
			return nil, err
		}
		futures = append(futures, f)
	}
	seqs := make([]uint64, len(futures))
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if !ack.Duplicate {
				seqs[i] = ack.Sequence
			}
		case err := <-f.Err():
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return seqs, nil
}

// laneCount is how many lanes are kept.
func (o *orderLanes) laneCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.lanes)
}
