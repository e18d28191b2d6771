package delivery

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/retryqueue"
	"github.com/wablast/webhook-operator/internal/store"
)

// workerEnv is what the endpoint workers share: the store, the sender, the
// 410 marks, the outcome recorder and the retry pump's bookkeeping. The
// dispatcher builds it once (see New); a worker needs nothing else of it.
type workerEnv struct {
	js jetstream.JetStream
	// retries is the on-disk retry queue (embedded store), or nil: retries
	// are then JetStream message schedules.
	retries *retryqueue.Queue
	sender  *sender
	gone    *goneMarks
	// sequential attempts a message's deliveries one at a time: without the
	// batcher several managers may share a consumer (see handleMsg).
	sequential bool
	// recordOutcomes stores finished deliveries' outcomes (outcomes.go).
	recordOutcomes func([]*store.Outcome) error
	// retryTaken tells the retry pump a retry it moved was taken (retrypump.go).
	retryTaken func(types.UID, jetstream.Msg)
	metrics    *Metrics
	// batches learns which group commit messages left the stream (backlog.go).
	batches *batchCounts
	log     logr.Logger
	now     func() time.Time
	rand    func() float64
}

// endpointWorker delivers one endpoint's pending deliveries. Its durable
// consumer's MaxAckPending is the endpoint's maxInFlight, so JetStream never
// hands it more concurrent deliveries than that, and a slow endpoint holds up
// only its own consumer.
type endpointWorker struct {
	env      *workerEnv
	ns, name string
	uid      types.UID
	ep       atomic.Pointer[endpoint.Endpoint]

	ctx    context.Context
	cancel context.CancelFunc
	cc     jetstream.ConsumeContext
	wg     sync.WaitGroup
	done   atomic.Bool

	// mu orders the consumer's callbacks (wg.Add) before stop's wg.Wait:
	// a message can still arrive after the consumer was told to stop.
	mu       sync.Mutex
	closing  bool
	stopOnce sync.Once

	// attempts bounds the attempts in flight at maxInFlight (a batch
	// message carries many deliveries); each runs on a goroutine of its own.
	attempts *semaphore.Weighted
	// dispatchMu lets one batch message at a time hand out its deliveries.
	dispatchMu sync.Mutex

	// held are the messages being worked on: keepAlive tells JetStream so.
	heldMu sync.Mutex
	held   map[jetstream.Msg]struct{}

	// lastActive (Unix nanoseconds) and inFlight tell when the worker is idle.
	lastActive atomic.Int64
	inFlight   atomic.Int32

	// lanes deliver the endpoint's ordered deliveries (ordered.go): always
	// for a PerKey endpoint, and for one that was PerKey while some are left.
	lanes atomic.Pointer[orderLanes]
	// withLanes asks start to start the lanes (set before start).
	withLanes bool
}

// touch records activity now.
func (w *endpointWorker) touch() { w.lastActive.Store(w.env.now().UnixNano()) }

// idle reports whether the worker has had nothing to do since the given time.
func (w *endpointWorker) idle(since time.Time) bool {
	if o := w.lanes.Load(); o != nil && !o.empty() {
		return false
	}
	return w.inFlight.Load() == 0 && w.lastActive.Load() < since.UnixNano()
}

func newEndpointWorker(env *workerEnv, ep *endpoint.Endpoint) *endpointWorker {
	w := &endpointWorker{env: env, ns: ep.Namespace, name: ep.Name, uid: ep.UID}
	w.ep.Store(ep.WithParsedURL())
	return w
}

func (w *endpointWorker) key() types.NamespacedName {
	return types.NamespacedName{Namespace: w.ns, Name: w.name}
}

// update swaps in a new configuration (URL, keys, policy) for the next attempts.
func (w *endpointWorker) update(ep *endpoint.Endpoint) {
	if !w.ep.Load().Equal(ep) {
		w.ep.Store(ep.WithParsedURL())
	}
}

func (w *endpointWorker) stopped() bool { return w.done.Load() }

func (w *endpointWorker) start(parent context.Context) error {
	ep := w.ep.Load()
	w.touch()
	w.attempts = semaphore.NewWeighted(int64(max(ep.Policy.MaxInFlight, 1)))
	w.held = map[jetstream.Msg]struct{}{}
	w.ctx, w.cancel = context.WithCancel(parent)
	perKey := ep.Policy.PerKey
	maxPending := ep.Policy.MaxInFlight
	if perKey {
		// Moving a message is a write, not an attempt: take many at a time.
		maxPending = movePending
	}
	cons, err := w.env.js.CreateOrUpdateConsumer(w.ctx, store.StreamDeliveries, jetstream.ConsumerConfig{
		Durable:       store.ConsumerName(w.ns, w.name),
		Description:   "Deliveries to WebhookConfig " + w.ns + "/" + w.name,
		FilterSubject: store.DeliverSubject(w.ns, w.name),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxPending,
		MaxDeliver:    -1,
		// MaxAckPending counts messages, several deliveries each in a batch;
		// the worker's slots bound the attempts.
		// An idle worker stops pulling; its consumer then expires. Its
		// deliveries stay in the work-queue stream for the next consumer.
		InactiveThreshold: 5 * time.Minute,
	})
	if err != nil {
		w.cancel()
		w.done.Store(true)
		return fmt.Errorf("creating consumer: %w", err)
	}
	if perKey || w.withLanes {
		if err := w.startLanes(w.ctx); err != nil {
			w.cancel()
			w.done.Store(true)
			return err
		}
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		w.mu.Lock()
		if w.closing {
			w.mu.Unlock()
			_ = m.Nak() // not attempted: delivered again later
			return
		}
		w.wg.Add(1)
		w.inFlight.Add(1)
		w.mu.Unlock()
		w.hold(m)
		if perKey {
			// In the callback, one message after the other: the order.
			defer w.wg.Done()
			defer w.inFlight.Add(-1)
			defer w.touch()
			defer w.release(m)
			w.move(m)
			return
		}
		go func() {
			defer w.wg.Done()
			defer w.inFlight.Add(-1)
			defer w.touch()
			defer w.release(m)
			w.handleMsg(w.ctx, m)
		}()
	}, jetstream.PullMaxMessages(maxPending), store.ConsumeErrors(w.env.log, "endpoint", "namespace", w.ns, "name", w.name))
	if err != nil {
		w.cancel()
		w.done.Store(true)
		return fmt.Errorf("consuming deliveries: %w", err)
	}
	w.mu.Lock()
	w.cc = cc
	w.mu.Unlock()
	// Should the consumption end by itself (the consumer lost with a NATS
	// node, say), mark the worker stopped: the next sync starts a new one if
	// the endpoint still has deliveries.
	go func() {
		select {
		case <-cc.Closed():
			w.done.Store(true)
		case <-w.ctx.Done():
		}
	}()
	go w.keepAlive()
	return nil
}

func (w *endpointWorker) hold(m jetstream.Msg) {
	w.heldMu.Lock()
	w.held[m] = struct{}{}
	w.heldMu.Unlock()
}

func (w *endpointWorker) release(m jetstream.Msg) {
	w.heldMu.Lock()
	delete(w.held, m)
	w.heldMu.Unlock()
}

// keepAlive tells JetStream every ackWait/3, until the worker stops, that
// the messages being worked on still are, so an attempt may take its whole
// timeout without the message being handed to another replica.
func (w *endpointWorker) keepAlive() {
	t := time.NewTicker(ackWait / 3)
	defer t.Stop()
	var msgs []jetstream.Msg
	for {
		select {
		case <-t.C:
		case <-w.ctx.Done():
			return
		}
		w.heldMu.Lock()
		msgs = msgs[:0]
		for m := range w.held {
			msgs = append(msgs, m)
		}
		w.heldMu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}

// attemptJob is one delivery to attempt; done is called with its settlement.
type attemptJob struct {
	ep   *endpoint.Endpoint
	dl   *store.Delivery
	done func(settlement)
}

// attempt runs job on a goroutine of its own once fewer than maxInFlight
// attempts are in flight. It returns false, and job is not run, when ctx
// ends first. (Goroutines kept for reuse, tried before, measured within
// the noise of this: docs/benchmarks.md's history.)
func (w *endpointWorker) attempt(ctx context.Context, job attemptJob) bool {
	if err := w.attempts.Acquire(ctx, 1); err != nil {
		return false
	}
	go func() {
		defer w.attempts.Release(1)
		job.done(w.handle(w.ctx, job.ep, job.dl, w.scheduleRetry))
	}()
	return true
}

// stop stops taking deliveries, cancels attempts in flight (they are
// redelivered later) and waits for them. It is safe to call more than once
// and from several goroutines.
func (w *endpointWorker) stop() {
	w.stopOnce.Do(func() {
		w.done.Store(true)
		w.mu.Lock()
		w.closing = true
		cc := w.cc
		w.mu.Unlock()
		if cc != nil {
			cc.Stop()
		}
		if w.cancel != nil {
			w.cancel()
		}
		if o := w.lanes.Load(); o != nil {
			o.close()
		}
		w.wg.Wait()
	})
}

// settlement is what became of one delivery of a message: done (nothing
// more to do once its outcome oc is recorded) or to be delivered again after
// delay.
type settlement struct {
	done  bool
	delay time.Duration
	oc    *store.Outcome
}

var again = settlement{}

func againAfter(d time.Duration) settlement { return settlement{delay: d} }

// handleMsg makes one attempt of each delivery the message carries, at most
// maxInFlight at once, then settles the message: acked when every delivery
// is done, redelivered whole when none is, and otherwise acked once the
// unfinished ones were stored again as messages of their own, so finished
// deliveries are not attempted twice.
func (w *endpointWorker) handleMsg(ctx context.Context, m jetstream.Msg) {
	ep, ds, ok := w.open(m)
	if !ok {
		return
	}
	// Without the batcher several managers may share the consumer, and
	// MaxAckPending bounds the attempts of all of them only if a message in
	// flight is at most one request: a batch message, should one be there,
	// is then attempted one delivery at a time.
	sequential := w.env.sequential
	if !sequential && len(ds) > 1 {
		// One message's deliveries are handed out before the next message's,
		// so at most a couple of messages are part done at any time: a crash
		// sends again only the finished deliveries of those (the whole
		// message is handed out again), not of every message held.
		w.dispatchMu.Lock()
	}
	res := make([]settlement, len(ds))
	var wg sync.WaitGroup
	for i := range ds {
		wg.Add(1)
		job := attemptJob{ep: ep, dl: &ds[i], done: func(r settlement) {
			res[i] = r
			wg.Done()
		}}
		if !w.attempt(ctx, job) {
			wg.Done() // not attempted: res[i] is again
		}
		if sequential {
			wg.Wait()
		}
	}
	if !sequential && len(ds) > 1 {
		w.dispatchMu.Unlock()
	}
	wg.Wait()
	w.recordOutcomes(res)
	w.settle(m, ds, res)
}

// open returns the endpoint's configuration and the deliveries m carries.
// A message left for an earlier resource of the same name is acknowledged
// and one that carries no readable delivery dropped; ok is then false.
func (w *endpointWorker) open(m jetstream.Msg) (*endpoint.Endpoint, []store.Delivery, bool) {
	ep := w.ep.Load()
	if m.Headers().Get(store.HdrEndpointUID) != string(ep.UID) {
		// Deliveries for an earlier resource of the same name.
		_ = m.Ack()
		w.env.msgDone(m)
		return nil, nil, false
	}
	w.env.retryTaken(ep.UID, m)
	ds, err := store.DeliveriesOf(m.Headers(), m.Data())
	if err != nil {
		w.env.log.Error(err, "Dropping a stored message that carries no readable delivery", "namespace", w.ns, "name", w.name, "subject", m.Subject())
		_ = m.Term()
		w.env.msgDone(m)
		return nil, nil, false
	}
	return ep, ds, true
}

// recordOutcomes records the outcomes of the message's finished deliveries
// in one go, after their attempts (so an attempt slot is free as soon as its
// request is done); should that fail, they are delivered again.
func (w *endpointWorker) recordOutcomes(res []settlement) {
	ocs := make([]*store.Outcome, 0, len(res))
	for _, r := range res {
		if r.done && r.oc != nil {
			ocs = append(ocs, r.oc)
		}
	}
	if err := w.env.recordOutcomes(ocs); err != nil {
		w.env.log.Error(err, "Recording outcomes failed; their deliveries will be attempted again", "namespace", w.ns, "name", w.name, "outcomes", len(ocs))
		for i := range res {
			if res[i].done && res[i].oc != nil {
				res[i] = againAfter(time.Second)
			}
		}
	}
}

// settle acknowledges or redelivers m according to what became of its deliveries.
func (w *endpointWorker) settle(m jetstream.Msg, ds []store.Delivery, res []settlement) {
	var left []int
	var delay time.Duration
	for i, r := range res {
		if !r.done {
			left = append(left, i)
			delay = max(delay, r.delay)
		}
	}
	redeliver := func() {
		if delay > 0 {
			_ = m.NakWithDelay(delay)
		} else {
			_ = m.Nak()
		}
	}
	switch {
	case len(left) == 0:
		_ = m.Ack()
		w.env.msgDone(m)
	case len(left) == len(ds):
		redeliver()
	default:
		if err := w.storeAgain(m, ds, left); err != nil {
			w.env.log.Error(err, "Storing unfinished deliveries of a batch failed; the whole batch will be attempted again", "namespace", w.ns, "name", w.name)
			redeliver()
			return
		}
		_ = m.Ack()
		w.env.msgDone(m)
	}
}

// storeAgain stores the deliveries of m at the indexes left as messages of
// their own. Their message IDs come from m's stream sequence, so storing them
// again after a crash adds nothing. It runs while the worker stops, too, so
// it has its own deadline instead of the worker's context.
func (w *endpointWorker) storeAgain(m jetstream.Msg, ds []store.Delivery, left []int) error {
	meta, err := m.Metadata()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), store.PublishAckTimeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(left))
	for _, i := range left {
		f, err := w.env.js.PublishMsgAsync(store.DeliveryMsg(w.ns, w.name, w.uid, &ds[i]),
			jetstream.WithMsgID(fmt.Sprintf("split.%d.%d", meta.Sequence.Stream, i)))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	return store.WaitAcks(ctx, futures)
}

// handle makes one attempt of one delivery and returns its outcome, to be
// recorded with the rest of the message's. What becomes of the delivery is
// decide's (retry.go); handle carries it out. Every durable write the
// outcome needs (a queued retry, the failed store here, the outcome record
// in handleMsg) is acknowledged before the delivery counts as done, so a
// crash at any point leads to a redelivery, never to a loss.
func (w *endpointWorker) handle(ctx context.Context, ep *endpoint.Endpoint, dl *store.Delivery, scheduleRetry retryFunc) settlement {
	env := w.env
	if env.gone.holds(ep.UID, ep.Generation) {
		// The endpoint answered 410 Gone: hold the delivery until its spec changes.
		return againAfter(time.Second)
	}
	attempt := dl.Attempt + 1
	now := env.now()
	acceptedAt, err := time.Parse(time.RFC3339Nano, dl.AcceptedAt)
	if err != nil {
		acceptedAt = now
	}
	oc := store.Outcome{
		UID: ep.UID, Namespace: ep.Namespace, Name: ep.Name, Generation: ep.Generation,
		EventID: dl.EventID, EventType: dl.EventType, Attempt: int32(attempt), AcceptedAt: dl.AcceptedAt,
	}
	if dl.Attempt == 0 && dl.ReplacesFailure != "" {
		// The first outcome of a replay takes back the failure it replaces
		// (in the stats); later attempts are of the new life only.
		if at, err := time.Parse(time.RFC3339Nano, dl.ReplacesFailure); err == nil {
			oc.ReplacesFailure = at
		}
	}
	if dl.Attempt == 0 && dl.ReplacesSuccess != "" {
		// Likewise a resend of a delivered event takes back its success.
		if at, err := time.Parse(time.RFC3339Nano, dl.ReplacesSuccess); err == nil {
			oc.ReplacesSuccess = at
		}
	}
	if dec, expired := expiredBeforeAttempt(ep.Policy, acceptedAt, now); expired {
		oc.Attempt = int32(dl.Attempt)
		oc.Result, oc.Reason, oc.Error = webhooksv1alpha1.ResultFailed, dec.reason, dec.errText
		return w.giveUp(ctx, ep, dl, &oc)
	}

	res := env.sender.send(ctx, ep, dl.EventID, dl.Body)
	if ctx.Err() != nil {
		// Shutting down or reconfiguring: not an attempt; deliver it again later.
		return again
	}
	oc.Attempted = true
	oc.StatusCode = int32(res.statusCode)
	oc.DurationMS = res.duration.Milliseconds()
	if env.sender.keepResponse {
		if u, err := ep.RequestURL(); err == nil {
			oc.Host = u.Host
		}
		oc.ResponseHeaders = store.LogResponseHeaders(res.header)
		if len(res.bodyHead) > 0 {
			oc.ResponseBody = store.LogResponseBody(res.bodyHead)
		}
	}
	if env.metrics != nil {
		env.metrics.attempt(ep, dl.EventType, &res)
	}
	if refused, ok := IsEgressRefused(res.err); ok {
		env.log.V(1).Info("The egress policy refused a delivery", "namespace", ep.Namespace, "name", ep.Name, "address", refused.IP.String(), "rule", refused.Reason)
	}
	now = env.now()
	dec := decide(ep.Policy, attempt, acceptedAt, now, &res, env.rand)
	oc.Reason, oc.Error = dec.reason, dec.errText
	switch dec.verdict {
	case verdictSucceeded:
		oc.Result = webhooksv1alpha1.ResultSucceeded
		if env.metrics != nil {
			env.metrics.delivered(ep, now.Sub(acceptedAt))
		}
		return w.finish(ctx, dl, &oc, false)
	case verdictGone:
		oc.Result = webhooksv1alpha1.ResultFailed
		oc.Gone = true
		env.gone.mark(ep.UID, ep.Generation)
		return w.giveUp(ctx, ep, dl, &oc)
	case verdictGiveUp:
		oc.Result = webhooksv1alpha1.ResultFailed
		return w.giveUp(ctx, ep, dl, &oc)
	}
	if err := scheduleRetry(ctx, dl, attempt, dec.retryAt); err != nil {
		env.log.Error(err, "Scheduling a retry failed; the delivery will be attempted again", "namespace", ep.Namespace, "name", ep.Name)
		return againAfter(dec.retryAt.Sub(now))
	}
	if env.metrics != nil {
		env.metrics.Retries.WithLabelValues(ep.Namespace, ep.Name).Inc()
	}
	oc.Result = webhooksv1alpha1.ResultRetrying
	oc.NextAttempt = dec.retryAt
	return w.finish(ctx, dl, &oc, false)
}

// retryFunc stores the next attempt of dl, its attempt-th, due at at.
type retryFunc func(ctx context.Context, dl *store.Delivery, attempt int, at time.Time) error

// movePending is how many stored messages a PerKey endpoint's worker is
// handed at a time to move under their ordering keys.
const movePending = 256

// scheduleRetry stores the next attempt, due at the given time: in the
// on-disk retry queue with the embedded store (see retrypump.go), or else
// as a JetStream message schedule that fires into the endpoint's subject.
func (w *endpointWorker) scheduleRetry(ctx context.Context, dl *store.Delivery, attempt int, at time.Time) error {
	if q := w.env.retries; q != nil {
		return w.queueRetry(q, dl, attempt, at)
	}
	subj := fmt.Sprintf("%s.%s.%s.%s", store.SubjRetry, w.ns, store.Token(w.name), retryToken(string(w.uid), dl.EventID, attempt))
	next := *dl
	next.Attempt = attempt
	next.ReplacesFailure = "" // only the first attempt of a replay takes its failure back
	next.ReplacesSuccess = ""
	msg := store.DeliveryMsg(w.ns, w.name, w.uid, &next)
	msg.Subject = subj
	// Schedules have whole-second precision: round up, never fire early.
	if t := at.Truncate(time.Second); !t.Equal(at) {
		at = t.Add(time.Second)
	}
	// No message ID: the subject names the retry (endpoint, event and
	// attempt), and a schedule published again on the same subject replaces
	// the one waiting there, so a publish repeated after a lost
	// acknowledgement schedules the attempt once. A message ID would also
	// keep an entry in the stream's duplicate map, in memory, for 5 minutes
	// per retry.
	_, err := w.env.js.PublishMsg(ctx, msg,
		jetstream.WithScheduleAt(at.UTC()),
		jetstream.WithScheduleTarget(store.DeliverSubject(w.ns, w.name)))
	return err
}

// finish stores the failed store entry when the delivery failed for good;
// the delivery is then done once its outcome oc is recorded.
func (w *endpointWorker) finish(ctx context.Context, dl *store.Delivery, oc *store.Outcome, failed bool) settlement {
	oc.Time = w.env.now().UTC()
	if failed {
		if err := w.storeFailed(ctx, dl, oc); err != nil {
			w.env.log.Error(err, "Storing a failed delivery failed; it will be attempted again", "namespace", w.ns, "name", w.name)
			return againAfter(time.Second)
		}
	}
	return settlement{done: true, oc: oc}
}

// giveUp finishes a delivery that failed for good and counts it once its
// failed copy is stored.
func (w *endpointWorker) giveUp(ctx context.Context, ep *endpoint.Endpoint, dl *store.Delivery, oc *store.Outcome) settlement {
	s := w.finish(ctx, dl, oc, true)
	if s.done && w.env.metrics != nil {
		w.env.metrics.failedForGood(ep, dl.EventType)
	}
	return s
}

// storeFailed keeps the delivery, with the attempts made and why it failed,
// in the failed store for replay.
func (w *endpointWorker) storeFailed(ctx context.Context, dl *store.Delivery, oc *store.Outcome) error {
	failed := *dl
	failed.Attempt = int(oc.Attempt)
	msg := store.DeliveryMsg(w.ns, w.name, w.uid, &failed)
	msg.Subject = store.FailedSubject(w.ns, w.name)
	msg.Header.Set(store.HdrFailedAt, oc.Time.Format(time.RFC3339Nano))
	msg.Header.Set(store.HdrError, oc.Error)
	_, err := w.env.js.PublishMsg(ctx, msg)
	return err
}

// retryToken names one retry of one event at one endpoint in a subject
// token: 16 characters of unpadded URL-safe base64 of a digest of the
// endpoint's UID and the event id (96 bits), then the attempt. Every
// waiting schedule keeps its subject in the store's memory (its schedule
// table and subject index), so it is kept short.
func retryToken(uid, eventID string, attempt int) string {
	sum := sha256.Sum256([]byte(uid + "/" + eventID))
	b := base64.RawURLEncoding.AppendEncode(make([]byte, 0, 20), sum[:12])
	b = append(b, '-')
	return string(strconv.AppendInt(b, int64(attempt), 10))
}
