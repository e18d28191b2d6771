package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

// statsKey is the stats bucket key of a UID.
func statsKey(uid types.UID) string { return string(uid) }

// LoadAll reads every endpoint's persisted stats.
func LoadAll(ctx context.Context, s *store.Store) (map[types.UID]*EndpointStats, error) {
	out := map[types.UID]*EndpointStats{}
	lister, err := s.StatsBucket().ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing stats: %w", err)
	}
	for key := range lister.Keys() {
		e, err := s.StatsBucket().Get(ctx, key)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return nil, fmt.Errorf("reading stats %s: %w", key, err)
		}
		var st EndpointStats
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			continue
		}
		out[st.UID] = &st
	}
	return out, nil
}

// Aggregator folds the outcomes stream into per-endpoint stats and persists
// them. Only one runs at a time (the leader's), so the counters are exact
// across replicas.
type Aggregator struct {
	store *store.Store
	now   func() time.Time

	// handled, when set (by tests), is called with the stream sequence of
	// each outcomes message once the aggregator is done with it.
	handled func(seq uint64)

	mu    sync.Mutex
	stats map[types.UID]*EndpointStats
	dirty map[types.UID]bool
	// ledger decides which outcomes are folded in and when their messages
	// are acknowledged.
	ledger *ledger
}

// NewAggregator returns an aggregator over the store's outcomes.
func NewAggregator(st *store.Store, now func() time.Time) *Aggregator {
	if now == nil {
		now = time.Now
	}
	return &Aggregator{store: st, now: now, stats: map[types.UID]*EndpointStats{}, dirty: map[types.UID]bool{}, ledger: newLedger()}
}

// Run consumes outcomes until ctx is done, persisting every persistEvery.
func (a *Aggregator) Run(ctx context.Context, persistEvery time.Duration, log logr.Logger) error {
	loaded, err := LoadAll(ctx, a.store)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.stats = loaded
	for _, st := range loaded {
		a.ledger.alreadyCounted(st.Unacked)
		st.Unacked = nil
	}
	a.mu.Unlock()

	// Start from a fresh consumer so that outcomes delivered to an earlier
	// aggregator and never acknowledged (it crashed) come again now rather than
	// after their ack wait. Those already folded in are listed in the
	// snapshots' Unacked and skipped.
	if err := a.store.JetStream().DeleteConsumer(ctx, store.StreamOutcomes, store.ConsumerStats); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("resetting the stats consumer: %w", err)
	}
	cc, err := a.consume(ctx, log)
	if err != nil {
		return err
	}
	consuming := make(chan struct{})
	go func() {
		defer close(consuming)
		store.KeepConsuming(ctx, log, "stats", cc, func() (jetstream.ConsumeContext, error) { return a.consume(ctx, log) })
	}()
	t := time.NewTicker(persistEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			a.persist(ctx)
		case <-ctx.Done():
			<-consuming // stopped: nothing more is folded in
			a.persist(context.WithoutCancel(ctx))
			return nil
		}
	}
}

// consume creates (or finds) the stats consumer and folds its messages in.
func (a *Aggregator) consume(ctx context.Context, log logr.Logger) (jetstream.ConsumeContext, error) {
	cons, err := a.store.JetStream().CreateOrUpdateConsumer(ctx, store.StreamOutcomes, jetstream.ConsumerConfig{
		Durable:       store.ConsumerStats,
		Description:   "Folds delivery outcomes into per-endpoint counters",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       statsAckWait,
		MaxAckPending: 200000,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the stats consumer: %w", err)
	}
	cc, err := cons.Consume(a.applyMsg, jetstream.PullMaxMessages(1000), store.ConsumeErrors(log, "stats"))
	if err != nil {
		return nil, fmt.Errorf("consuming outcomes: %w", err)
	}
	return cc, nil
}

// applyMsg folds in the outcomes of one message, as the ledger decides.
func (a *Aggregator) applyMsg(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	seq := meta.Sequence.Stream
	if a.handled != nil {
		defer a.handled(seq)
	}
	ocs, err := store.DecodeOutcomes(m.Data())
	if err != nil || len(ocs) == 0 {
		_ = m.Term()
		return
	}
	a.fold(m, seq, ocs)
}

// fold folds in the outcomes ocs of the message m at stream sequence seq.
func (a *Aggregator) fold(m acker, seq uint64, ocs []store.Outcome) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	uid := ocs[0].UID
	st := a.stats[uid]
	if st == nil {
		st = &EndpointStats{UID: uid, Namespace: ocs[0].Namespace, Name: ocs[0].Name}
		a.stats[uid] = st
	}
	verdict := a.ledger.receive(seq, now)
	if verdict == msgAgain {
		return
	}
	for i := range ocs {
		oc := &ocs[i]
		if oc.UID != uid {
			continue // one endpoint per message, by construction
		}
		if a.ledger.firstRecord(oc, now) && verdict == msgFold {
			st.apply(oc)
		}
	}
	st.Unacked = append(st.Unacked, seq)
	a.dirty[uid] = true
	a.ledger.hold(heldOutcome{m: m, seq: seq, uid: uid, at: now})
}

// persist writes the changed stats, then acknowledges the outcomes folded
// into them.
func (a *Aggregator) persist(ctx context.Context) {
	a.mu.Lock()
	now := a.now()
	// Messages held long enough are acknowledged after this write, which
	// lists them (and every other held message) as Unacked.
	plan := a.ledger.planAcks(now)
	for _, h := range plan.due {
		a.dirty[h.uid] = true // its Unacked list shrinks
	}
	writes := make(map[types.UID][]byte, len(a.dirty))
	for uid := range a.dirty {
		st := a.stats[uid]
		if st == nil {
			continue
		}
		st.prune(now)
		data, err := json.Marshal(st)
		if err == nil {
			writes[uid] = data
		}
	}
	a.dirty = map[types.UID]bool{}
	a.mu.Unlock()

	for uid, data := range writes {
		if _, err := a.store.StatsBucket().Put(ctx, statsKey(uid), data); err != nil {
			// Nothing acked: the next persist writes this snapshot again.
			a.mu.Lock()
			for uid := range writes {
				a.dirty[uid] = true
			}
			a.mu.Unlock()
			return
		}
	}
	if len(plan.due) == 0 {
		a.pruneLedger(now)
		return
	}
	for _, h := range plan.due {
		_ = h.m.Ack()
	}
	acked := make(map[uint64]bool, len(plan.due))
	for _, h := range plan.due {
		acked[h.seq] = true
	}
	a.mu.Lock()
	a.ledger.acked(plan)
	for _, h := range plan.due {
		if st := a.stats[h.uid]; st != nil {
			st.Unacked = slices.DeleteFunc(st.Unacked, func(seq uint64) bool { return acked[seq] })
		}
	}
	a.mu.Unlock()
	a.pruneLedger(now)
}

// pruneLedger has the ledger forget, as of now, what it need no longer remember.
func (a *Aggregator) pruneLedger(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ledger.prune(now)
}

// Snapshot returns a copy of every endpoint's stats.
func (a *Aggregator) Snapshot() []EndpointStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]EndpointStats, 0, len(a.stats))
	for _, st := range a.stats {
		cp := *st
		cp.Recent = append([]webhooksv1alpha1.DeliveryRecord(nil), st.Recent...)
		cp.Buckets = make(map[int64][2]int64, len(st.Buckets))
		for k, v := range st.Buckets {
			cp.Buckets[k] = v
		}
		out = append(out, cp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// Get returns a copy of one endpoint's stats.
func (a *Aggregator) Get(uid types.UID) (EndpointStats, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st, ok := a.stats[uid]
	if !ok {
		return EndpointStats{}, false
	}
	cp := *st
	cp.Recent = append([]webhooksv1alpha1.DeliveryRecord(nil), st.Recent...)
	return cp, true
}

// Forget drops the stats of a deleted resource.
func (a *Aggregator) Forget(ctx context.Context, uid types.UID) {
	a.mu.Lock()
	delete(a.stats, uid)
	delete(a.dirty, uid)
	a.mu.Unlock()
	_ = a.store.StatsBucket().Delete(ctx, statsKey(uid))
}
