package delivery

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/stats"
	"github.com/wablast/webhook-operator/internal/store"
)

// Options configures a Dispatcher.
type Options struct {
	// Registry is the live configuration written by the controller.
	Registry endpoint.Registry
	// Store is the open JetStream store.
	Store *store.Store
	// HTTPClient sends every delivery; one shared client (see NewHTTPClient).
	// Deliveries go straight to its Transport (http.DefaultTransport when
	// nil): redirects are never followed, and its Jar, Timeout and
	// CheckRedirect are not used (each endpoint's timeoutSeconds bounds an
	// attempt).
	HTTPClient *http.Client
	// UserAgent is sent with every delivery.
	UserAgent string
	// MaxResponseBytes caps how much of a response body is read (default 64 KiB).
	MaxResponseBytes int64
	// FanoutWorkers is how many events are fanned out in parallel (default 8).
	FanoutWorkers int
	// SyncInterval is how often endpoint workers are matched to the registry (default 500ms).
	SyncInterval time.Duration
	// IdleTimeout stops an endpoint's worker (and lets its consumer expire)
	// after this long without a delivery (default 1m). Workers start again when
	// a delivery for the endpoint is stored, so only active endpoints cost
	// anything.
	IdleTimeout time.Duration
	// ScanInterval is how often the delivery stream is scanned for endpoints
	// with deliveries but no worker: retries that came due, deliveries left
	// from before a restart (default 2s).
	ScanInterval time.Duration
	// GroupCommitDelay is how long, with the embedded server, a write of
	// deliveries to an endpoint waits for more to join it when the write
	// before it carried several (the endpoint is busy); a write after a
	// single delivery never waits. The outcome recorder waits as long, after
	// a message of several deliveries, for the next message's outcomes to
	// share its write. Default 1ms; negative disables both.
	GroupCommitDelay time.Duration
	// Metrics receives delivery metrics; nil disables them.
	Metrics *Metrics
	// BacklogInterval is how often each endpoint's pending deliveries and
	// delivery lag are read from the store for Metrics (default 5s).
	BacklogInterval time.Duration
	// IsLeader reports whether this replica is the leader; nil: always.
	// PerKey endpoints (spec.delivery.ordering) are delivered by the leader
	// only, so one replica at a time keeps a key's order.
	IsLeader func() bool
	// Now and Rand are seams for tests; default time.Now and math/rand/v2.
	Now  func() time.Time
	Rand func() float64
	// Logger defaults to a discarding logger.
	Logger logr.Logger
	// DeliveryLogBodyBytes caps the bodies the delivery log keeps (larger
	// ones are kept as size and SHA-256); default
	// store.DefaultDeliveryLogBodyBytes. The log is kept when the store
	// keeps it (store.Options.DeliveryLogRetention).
	DeliveryLogBodyBytes int
	// Reporter records test deliveries and replays (status.lastTest,
	// status.lastReplay, Kubernetes Events). Optional.
	Reporter Reporter
}

// Dispatcher stores accepted events, fans each out to the subscribed
// endpoints of its namespace and delivers it with retries. It runs on every
// replica (NeedLeaderElection is false): JetStream hands each pending delivery
// to one replica at a time.
type Dispatcher struct {
	opts   Options
	js     jetstream.JetStream
	sender *sender
	// gone holds endpoints that answered 410 Gone.
	gone *goneMarks
	// env is what the endpoint workers share.
	env *workerEnv
	// recorderDelay is how long the outcome recorder waits for more under
	// load: the group commit delay (0: never).
	recorderDelay time.Duration

	mu      sync.Mutex
	workers map[types.NamespacedName]*endpointWorker
	handled map[string]string // last test/replay token handled, by kind and UID
	// wanted holds endpoints with stored deliveries and no worker yet; wake
	// asks the sync loop to start their workers now.
	wanted map[types.NamespacedName]time.Time
	wake   chan struct{}

	// batcher stores the deliveries Enqueue accepts, together when they
	// arrive together; nil with an external NATS (see New).
	batcher *batcher

	// claims serializes concurrent posts of one idempotency key (claims.go).
	claims keyClaims

	// dlog writes the delivery log; nil when it is off.
	dlog *deliveryLog

	// outcomes feeds the outcome recorder (see recordOutcome).
	outcomes chan pendingOutcome

	// baseCtx bounds background work (tests, replays); set by Start.
	baseCtx context.Context

	// replayMu runs replays one at a time, so two replays never both queue
	// the same failed copy before either removed it.
	replayMu sync.Mutex

	// pump is the retry pump's count of retries moved ahead of each
	// endpoint's worker (retrypump.go).
	pump pumpState

	// forgotten are the WebhookConfigs deleted lately (Forget).
	forgotten forgottenSet

	// batches counts the deliveries of group commit messages (backlog.go).
	batches *batchCounts

	// syncs counts the sync loop's rounds (syncWorkers), so tests can wait
	// for decisions instead of sleeping; backlogs the backlog's (backlog.go).
	syncs    atomic.Int64
	backlogs atomic.Int64

	// leftovers are endpoints found with ordered deliveries queued (by
	// scanOrdered) whose workers start their lanes; wasLeader is the
	// leadership the sync loop saw last. Both belong to the sync loop.
	leftovers map[types.NamespacedName]bool
	wasLeader bool
}

// New returns a Dispatcher; Start runs it.
func New(opts Options) (*Dispatcher, error) {
	if opts.Registry == nil || opts.Store == nil {
		return nil, errors.New("dispatcher needs a registry and a store")
	}
	if opts.HTTPClient == nil {
		return nil, errors.New("dispatcher needs an HTTP client")
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "wablast-webhook-operator"
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = 64 << 10
	}
	if opts.FanoutWorkers <= 0 {
		opts.FanoutWorkers = 8
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 500 * time.Millisecond
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = time.Minute
	}
	if opts.ScanInterval <= 0 {
		opts.ScanInterval = 2 * time.Second
	}
	if opts.BacklogInterval <= 0 {
		opts.BacklogInterval = backlogEvery
	}
	if opts.GroupCommitDelay == 0 {
		opts.GroupCommitDelay = DefaultGroupCommitDelay
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	transport := opts.HTTPClient.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	batches := &batchCounts{}
	dlog := newDeliveryLog(opts.Store, opts.DeliveryLogBodyBytes, opts.Logger)
	d := &Dispatcher{
		opts: opts,
		sender: &sender{transport: transport, userAgent: []string{opts.UserAgent}, maxResponseBytes: opts.MaxResponseBytes, now: opts.Now,
			keepResponse: dlog != nil},
		dlog:          dlog,
		recorderDelay: max(opts.GroupCommitDelay, 0),
		js:            opts.Store.JetStream(),
		workers:       map[types.NamespacedName]*endpointWorker{},
		gone:          newGoneMarks(),
		handled:       map[string]string{},
		wanted:        map[types.NamespacedName]time.Time{},
		leftovers:     map[types.NamespacedName]bool{},
		wake:          make(chan struct{}, 1),
		pump:          pumpState{inStream: map[uint64]int{}},
		batcher:       batcherFor(opts.Store, max(opts.GroupCommitDelay, 0), batches, dlog),
		batches:       batches,
		outcomes:      make(chan pendingOutcome, 4*maxOutcomeBatch),
		baseCtx:       context.Background(),
	}
	d.env = &workerEnv{
		js:             d.js,
		retries:        opts.Store.Retries(),
		sender:         d.sender,
		gone:           d.gone,
		sequential:     d.batcher == nil,
		recordOutcomes: d.recordOutcomes,
		retryTaken:     d.retryTaken,
		metrics:        opts.Metrics,
		batches:        batches,
		log:            opts.Logger,
		now:            opts.Now,
		rand:           opts.Rand,
	}
	return d, nil
}

// batcherFor returns the batcher for the store, or nil when deliveries must
// be stored one per message. An endpoint's maxInFlight must hold across
// every manager delivering to it, and JetStream bounds a consumer's
// messages in flight (MaxAckPending), not the deliveries inside them; a
// manager bounds the attempts it makes itself. With the embedded server one
// manager delivers everything, so its own bound is the endpoint's. With an
// external NATS several replicas may share the endpoint's consumer, so each
// message carries one delivery and MaxAckPending is the bound.
func batcherFor(s *store.Store, delay time.Duration, counts *batchCounts, dlog *deliveryLog) *batcher {
	if !s.Embedded() {
		return nil
	}
	b := newBatcher(s.JetStream(), delay, counts)
	b.dlog = dlog
	return b
}

// DefaultGroupCommitDelay is Options.GroupCommitDelay's default; what it
// buys under load is measured by `make bench` (docs/benchmarks.md).
const DefaultGroupCommitDelay = time.Millisecond

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica delivers.
func (d *Dispatcher) NeedLeaderElection() bool { return false }

// Start runs the fan-out and the endpoint workers until ctx is done. It
// waits for the registry to be rebuilt before fanning out the first event.
func (d *Dispatcher) Start(ctx context.Context) error {
	log := d.opts.Logger
	d.mu.Lock()
	d.baseCtx = ctx
	d.mu.Unlock()
	if err := d.loadGone(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	select {
	case <-d.opts.Registry.Synced():
	case <-ctx.Done():
		return nil
	}

	// The outcome recorder outlives the endpoint workers, whose deliveries
	// wait for their outcomes to be stored.
	quitRecorder := make(chan struct{})
	recorderDone := make(chan struct{})
	go func() {
		defer close(recorderDone)
		d.runOutcomeRecorder(quitRecorder)
	}()
	defer func() {
		close(quitRecorder)
		<-recorderDone
		d.dlog.close() // the Stored records still waiting for an attempt
	}()

	msgs := make(chan jetstream.Msg, 512)
	cc, err := d.consumeEvents(ctx, msgs)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting, which is no failure
		}
		return err
	}
	consuming := make(chan struct{})
	go func() {
		defer close(consuming)
		store.KeepConsuming(ctx, d.opts.Logger, "fan-out", cc, func() (jetstream.ConsumeContext, error) { return d.consumeEvents(ctx, msgs) })
	}()
	var wg sync.WaitGroup
	if q := d.opts.Store.Retries(); q != nil {
		wg.Go(func() { d.pumpRetries(ctx, q) })
	}
	wg.Go(func() { d.runBacklog(ctx) })
	if !d.opts.Store.Embedded() {
		wg.Go(func() { d.runOrderedFanout(ctx) })
	}
	for range d.opts.FanoutWorkers {
		wg.Go(func() {
			for {
				select {
				case m := <-msgs:
					d.fanout(ctx, m)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	log.Info("Dispatcher started")

	ticker := time.NewTicker(d.opts.SyncInterval)
	defer ticker.Stop()
	depth := time.NewTicker(5 * time.Second)
	defer depth.Stop()
	scan := time.NewTicker(d.opts.ScanInterval)
	defer scan.Stop()
	ordered := time.NewTicker(orderedScanInterval)
	defer ordered.Stop()
	d.scanDeliveries(ctx)
	d.scanOrdered(ctx)
	d.recordQueueDepth(ctx) // the series exist from the first scrape
	for {
		d.syncWorkers(ctx)
		select {
		case <-ticker.C:
		case <-d.wake:
		case <-scan.C:
			d.scanDeliveries(ctx)
			if leader := d.leader(); leader && !d.wasLeader {
				d.scanOrdered(ctx) // just elected: go on with the ordered deliveries
			}
		case <-ordered.C:
			d.scanOrdered(ctx)
		case <-depth.C:
			d.recordQueueDepth(ctx)
		case <-ctx.Done():
			<-consuming
			wg.Wait()
			d.stopAllWorkers()
			log.Info("Dispatcher stopped")
			return nil
		}
	}
}

// consumeEvents creates (or finds) the fan-out consumer and feeds its
// messages to msgs until the consumption is stopped or ends.
func (d *Dispatcher) consumeEvents(ctx context.Context, msgs chan<- jetstream.Msg) (jetstream.ConsumeContext, error) {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, store.StreamEvents, jetstream.ConsumerConfig{
		Durable:       store.ConsumerFanout,
		Description:   "Fans accepted events out into per-endpoint deliveries",
		FilterSubject: store.SubjEvents + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		// Fanning out takes milliseconds; after a crash, events it had pulled
		// come back quickly (their deliveries are deduplicated by message ID).
		AckWait:       ackWait,
		MaxAckPending: 4096,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the fan-out consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done(): // not acked: fanned out after the restart
		}
	}, jetstream.PullMaxMessages(512), store.ConsumeErrors(d.opts.Logger, "fan-out"))
	if err != nil {
		return nil, fmt.Errorf("consuming events: %w", err)
	}
	return cc, nil
}

// fanout turns one stored event into one delivery per subscribed endpoint,
// then acknowledges the event. A redelivered event produces no duplicate
// deliveries: each delivery carries a message ID made of the event's stream
// sequence and the endpoint's UID.
func (d *Dispatcher) fanout(ctx context.Context, m jetstream.Msg) {
	if err := d.fanoutMsg(ctx, m); err != nil {
		if ctx.Err() != nil {
			return // stopping: fanned out again after the restart
		}
		d.opts.Logger.Error(err, "Storing a delivery failed; the event will be fanned out again")
		_ = m.NakWithDelay(time.Second)
	}
}

// fanoutInOrder fans out an event of SubjOrderedEvents: a failed write is
// tried again in place, so that no later event of the stream is fanned out
// before it (the consumer's callback runs one message after the other).
func (d *Dispatcher) fanoutInOrder(ctx context.Context, m jetstream.Msg) {
	for {
		err := d.fanoutMsg(ctx, m)
		if err == nil || ctx.Err() != nil {
			return
		}
		d.opts.Logger.Error(err, "Storing a delivery failed; trying again in a second, in order")
		_ = m.InProgress()
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

// fanoutMsg stores the deliveries of the event m and acknowledges it; on
// an error m is neither acknowledged nor handed back.
func (d *Dispatcher) fanoutMsg(ctx context.Context, m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term() // not a JetStream message: nothing to fan out, or to try again
		return nil   //nolint:nilerr // handled: the message is terminated
	}
	ns := store.NamespaceOfEventSubject(m.Subject())
	h := m.Headers()
	subs := endpoint.Matching(d.opts.Registry.Subscribers(ns, h.Get(store.HdrEventType)), endpoint.FilterEvent{Type: h.Get(store.HdrEventType), Envelope: m.Data()})
	futures := make([]jetstream.PubAckFuture, 0, len(subs))
	for i := range subs {
		ep := &subs[i]
		dl := store.Delivery{EventID: h.Get(store.HdrEventID), EventType: h.Get(store.HdrEventType), AcceptedAt: h.Get(store.HdrAcceptedAt), Body: m.Data()}
		msg := store.DeliveryMsg(ns, ep.Name, ep.UID, &dl)
		d.dlog.stored(ns, ep.Name, ep.UID, []store.Delivery{dl}, "")
		f, err := d.js.PublishMsgAsync(msg, jetstream.WithMsgID(fanoutMsgID(meta.Sequence.Stream, ep.UID)))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	if err := store.WaitAcks(ctx, futures); err != nil {
		return err
	}
	_ = m.Ack()
	keys := make([]types.NamespacedName, len(subs))
	for i := range subs {
		keys[i] = subs[i].Key()
	}
	d.want(keys...)
	return nil
}

// runOrderedFanout fans out SubjOrderedEvents while this replica is the
// leader, one event after the other in stream order: the deliveries of one
// PerKey endpoint are then stored in the order their events were.
func (d *Dispatcher) runOrderedFanout(ctx context.Context) {
	for !d.leader() {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
	start := func() (jetstream.ConsumeContext, error) {
		cons, err := d.js.CreateOrUpdateConsumer(ctx, store.StreamEvents, jetstream.ConsumerConfig{
			Durable:       store.ConsumerOrderedFanout,
			Description:   "Fans out, in order, accepted events a PerKey endpoint subscribes to",
			FilterSubject: store.SubjOrderedEvents + ".>",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       ackWait,
			MaxAckPending: 1024,
			MaxDeliver:    -1,
		})
		if err != nil {
			return nil, fmt.Errorf("creating the ordered fan-out consumer: %w", err)
		}
		return cons.Consume(func(m jetstream.Msg) { d.fanoutInOrder(ctx, m) },
			jetstream.PullMaxMessages(256), store.ConsumeErrors(d.opts.Logger, "ordered fan-out"))
	}
	for {
		cc, err := start()
		if err == nil {
			store.KeepConsuming(ctx, d.opts.Logger, "ordered fan-out", cc, start)
			return
		}
		if ctx.Err() != nil {
			return
		}
		d.opts.Logger.Error(err, "Starting the ordered fan-out; trying again in a second")
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
}

// fanoutMsgID names the delivery of the event at stream sequence seq to the
// endpoint uid: the sequence in base 36 and 12 characters of a digest of
// the UID. The deliveries stream keeps every ID of its duplicate window in
// memory, so it is kept short.
func fanoutMsgID(seq uint64, uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	b := strconv.AppendUint(make([]byte, 0, 24), seq, 36)
	b = append(b, '.')
	b = base64.RawURLEncoding.AppendEncode(b, sum[:9])
	return string(b)
}

// Syncs returns how many rounds the sync loop (which starts and stops the
// endpoint workers) has finished, for tests to wait on.
func (d *Dispatcher) Syncs() int64 { return d.syncs.Load() }

// want records that the endpoints have stored deliveries: an idle endpoint
// gets its worker started by the sync loop, which is woken at once.
func (d *Dispatcher) want(keys ...types.NamespacedName) {
	now := d.opts.Now()
	woken := false
	d.mu.Lock()
	for _, key := range keys {
		if w := d.workers[key]; w != nil && !w.stopped() {
			w.touch()
			continue
		}
		if _, ok := d.wanted[key]; !ok {
			d.wanted[key] = now
			woken = true
		}
	}
	d.mu.Unlock()
	if woken {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// scanDeliveries finds the endpoints that have deliveries in the stream:
// retries whose schedule fired, and deliveries stored before a restart or
// while the endpoint's worker was idle.
func (d *Dispatcher) scanDeliveries(ctx context.Context) {
	stream, err := d.js.Stream(ctx, store.StreamDeliveries)
	if err != nil {
		return
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(store.SubjDeliver+".>"))
	if err != nil {
		return
	}
	keys := make([]types.NamespacedName, 0, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		if n == 0 {
			continue
		}
		if key, ok := store.EndpointOfSubject(subj); ok {
			keys = append(keys, key)
		}
	}
	d.want(keys...)
}

// workerState is what the sync plan knows of a running worker.
type workerState struct {
	// ep is the configuration it delivers with.
	ep *endpoint.Endpoint
	// stopped: its consumption ended (stopped, or lost with its consumer).
	stopped bool
	// idle: it has had nothing to do for the idle timeout.
	idle bool
}

// syncPlan is what one round of the sync loop does.
type syncPlan struct {
	// stop are the workers to stop: idle, reconfigured, or of endpoints no
	// longer registered (disabled, deleted), paused, or held by a 410.
	stop []types.NamespacedName
	// update are the endpoints whose running worker takes their new
	// configuration (URL, keys, policy) for its next attempts.
	update []*endpoint.Endpoint
	// start are the endpoints whose worker starts.
	start []*endpoint.Endpoint
}

// planSync decides a round of the sync loop from the registered endpoints,
// the workers running, the endpoints with stored deliveries (wanted) and
// held, which reports an endpoint held by a 410 Gone at its generation:
//
//   - an endpoint paused (spec.paused) or held by a 410 has no worker;
//   - a running worker whose consumer settings still fit is stopped when it
//     is idle and nothing new was stored for it, and otherwise takes the
//     endpoint's configuration;
//   - a worker whose consumer settings changed (maxInFlight, timeout, a new
//     UID) or whose consumption ended is stopped, and started again at once;
//   - an endpoint with stored deliveries and no worker gets one;
//   - a PerKey endpoint has a worker on the leader only;
//   - the workers of endpoints no longer registered are stopped.
func planSync(eps []endpoint.Endpoint, running map[types.NamespacedName]workerState, wanted map[types.NamespacedName]time.Time, held func(types.UID, int64) bool, leader bool) syncPlan {
	var p syncPlan
	registered := make(map[types.NamespacedName]bool, len(eps))
	for i := range eps {
		ep := &eps[i]
		if ep.Paused || held(ep.UID, ep.Generation) {
			continue // its deliveries wait in the stream
		}
		if ep.Policy.PerKey && !leader {
			continue // the leader delivers it, one replica keeps the order
		}
		key := ep.Key()
		registered[key] = true
		w, ok := running[key]
		_, want := wanted[key]
		switch {
		case ok && !w.stopped && sameConsumer(w.ep, ep) && w.idle && !want:
			p.stop = append(p.stop, key)
			continue
		case ok && !w.stopped && sameConsumer(w.ep, ep):
			p.update = append(p.update, ep)
			continue
		case ok:
			p.stop = append(p.stop, key)
			want = true // a reconfigured worker comes back at once
		}
		if want {
			p.start = append(p.start, ep)
		}
	}
	for key := range running {
		if !registered[key] {
			p.stop = append(p.stop, key)
		}
	}
	return p
}

// sameConsumer reports whether a worker delivering with cur can deliver
// with ep without its consumer being recreated.
func sameConsumer(cur, ep *endpoint.Endpoint) bool {
	return cur.UID == ep.UID && cur.Policy.MaxInFlight == ep.Policy.MaxInFlight && cur.Policy.Timeout == ep.Policy.Timeout &&
		cur.Policy.PerKey == ep.Policy.PerKey
}

// leader reports whether this replica is the leader.
func (d *Dispatcher) leader() bool { return d.opts.IsLeader == nil || d.opts.IsLeader() }

// orderedScanInterval is how often the leader looks for endpoints with
// ordered deliveries queued and no lanes working on them (after a restart,
// an election, or an endpoint that is no longer PerKey).
const orderedScanInterval = time.Minute

// scanOrdered finds, on the leader, the registered endpoints with ordered
// deliveries queued: their workers start (or run) their lanes. One direct
// get per endpoint.
func (d *Dispatcher) scanOrdered(ctx context.Context) {
	d.wasLeader = d.leader()
	if !d.wasLeader {
		return
	}
	stream, err := d.js.Stream(ctx, store.StreamOrdered)
	if err != nil {
		return
	}
	var found []types.NamespacedName
	for _, ep := range d.opts.Registry.List() {
		if _, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(store.OrderedSubjects(ep.Namespace, ep.Name))); err == nil {
			found = append(found, ep.Key())
		}
	}
	d.mu.Lock()
	var running []*endpointWorker
	for _, key := range found {
		d.leftovers[key] = true
		if w := d.workers[key]; w != nil && !w.stopped() {
			running = append(running, w)
		}
	}
	d.mu.Unlock()
	for _, w := range running {
		err := w.startLanes(w.ctx) // a rescan when they run already
		if err != nil && ctx.Err() == nil {
			d.opts.Logger.Error(err, "Starting the ordered deliveries of an endpoint", "namespace", w.ns, "name", w.name)
		}
	}
	d.want(found...)
}

// syncWorkers carries out a round of planSync: it starts a worker for every
// registered endpoint that has deliveries waiting, restarts those whose
// consumer settings changed, and stops those no longer registered or idle.
func (d *Dispatcher) syncWorkers(ctx context.Context) {
	defer d.syncs.Add(1)
	eps := d.opts.Registry.List()
	idleSince := d.opts.Now().Add(-d.opts.IdleTimeout)

	d.mu.Lock()
	running := make(map[types.NamespacedName]workerState, len(d.workers))
	for key, w := range d.workers {
		running[key] = workerState{ep: w.ep.Load(), stopped: w.stopped(), idle: w.idle(idleSince)}
	}
	leader := d.leader()
	plan := planSync(eps, running, d.wanted, d.gone.check, leader)
	// Every wanted endpoint was either started or is not registered (found
	// again by the next scan should it come back).
	clear(d.wanted)
	toStop := make([]*endpointWorker, 0, len(plan.stop))
	for _, key := range plan.stop {
		w := d.workers[key]
		if o := w.lanes.Load(); o != nil && !o.empty() {
			d.leftovers[key] = true // the next worker goes on with them (PerKey switched off)
		}
		toStop = append(toStop, w)
		delete(d.workers, key)
	}
	for _, ep := range plan.update {
		d.workers[ep.Key()].update(ep)
	}
	toStart := make([]*endpointWorker, 0, len(plan.start))
	for _, ep := range plan.start {
		w := newEndpointWorker(d.env, ep)
		w.withLanes = leader && d.leftovers[ep.Key()]
		delete(d.leftovers, ep.Key())
		d.workers[ep.Key()] = w
		toStart = append(toStart, w)
	}
	d.mu.Unlock()

	for _, w := range toStop {
		w.stop()
		if d.opts.Metrics == nil || !d.forgotten.has(w.key()) {
			continue
		}
		if _, ok := d.opts.Registry.Get(w.key()); !ok {
			// Deleted: what its last attempts counted goes too (see Forget).
			d.opts.Metrics.forget(w.key())
		}
	}
	// Creating a durable consumer is a JetStream API round trip: start many
	// at once, so thousands of endpoints come up in seconds after a restart.
	sem := make(chan struct{}, workerStartParallelism)
	var wg sync.WaitGroup
	for _, w := range toStart {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := w.start(ctx); err != nil && ctx.Err() == nil {
				d.opts.Logger.Error(err, "Starting endpoint worker", "namespace", w.ns, "name", w.name)
				d.mu.Lock()
				if d.workers[w.key()] == w {
					delete(d.workers, w.key()) // retried on the next sync
				}
				d.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// ackWait is how long a pulled message stays with one replica without a
// sign of life. Deliveries in progress say InProgress every ackWait/3, so an
// attempt may take its full timeout, while the deliveries a crashed replica
// held come back within seconds instead of blocking the endpoint's in-flight
// slots for the whole timeout.
const ackWait = 6 * time.Second

// workerStartParallelism bounds the consumer creations in flight.
const workerStartParallelism = 32

func (d *Dispatcher) stopAllWorkers() {
	d.mu.Lock()
	ws := make([]*endpointWorker, 0, len(d.workers))
	for _, w := range d.workers {
		ws = append(ws, w)
	}
	d.workers = map[types.NamespacedName]*endpointWorker{}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(w.stop)
	}
	wg.Wait()
}

// recordQueueDepth publishes how many messages wait: events not yet fanned
// out, pending deliveries (scheduled retries included with an external
// NATS), retries waiting in the on-disk queue (embedded store) and failed
// deliveries kept.
func (d *Dispatcher) recordQueueDepth(ctx context.Context) {
	if d.opts.Metrics == nil {
		return
	}
	if c, err := d.js.Consumer(ctx, store.StreamEvents, store.ConsumerFanout); err == nil {
		if info, err := c.Info(ctx); err == nil {
			d.opts.Metrics.QueueDepth.WithLabelValues(store.StreamEvents).Set(float64(info.NumPending + uint64(info.NumAckPending)))
		}
	}
	for _, name := range []string{store.StreamDeliveries, store.StreamFailed, store.StreamOrdered} {
		s, err := d.js.Stream(ctx, name)
		if err != nil {
			continue
		}
		info, err := s.Info(ctx)
		if err != nil {
			continue
		}
		d.opts.Metrics.QueueDepth.WithLabelValues(name).Set(float64(info.State.Msgs))
	}
	if q := d.opts.Store.Retries(); q != nil {
		d.opts.Metrics.QueueDepth.WithLabelValues(queueRetries).Set(float64(q.Len()))
	}
}

// queueRetries is wablast_webhook_queue_depth's label for the on-disk
// retry queue of the embedded store.
const queueRetries = "retry-queue"

// loadGone restores the 410 Gone marks from the stats bucket.
func (d *Dispatcher) loadGone(ctx context.Context) error {
	all, err := stats.LoadAll(ctx, d.opts.Store)
	if err != nil {
		return err
	}
	for _, st := range all {
		if st.GoneGeneration > 0 {
			d.gone.mark(st.UID, st.GoneGeneration)
		}
	}
	return nil
}
