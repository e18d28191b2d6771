// Package stats folds the outcomes of delivery attempts into each
// endpoint's counters (EndpointStats), once each however often an outcome
// is recorded, and keeps them in the store's stats bucket: the Aggregator.
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/textutil"
)

// rateBucket is the width of the buckets the 24-hour success rate is summed over.
const rateBucket = 5 * time.Minute

// RecentDeliveries is how many attempts status.recentDeliveries keeps.
const RecentDeliveries = 10

// EndpointStats are one endpoint's counters, persisted in the stats bucket
// under the resource's UID, so they survive restarts and start from zero for
// a new resource of the same name.
type EndpointStats struct {
	UID       types.UID `json:"uid"`
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`

	TotalEventsSent     int64                             `json:"totalEventsSent"`
	EventsDelivered     int64                             `json:"eventsDelivered"`
	EventsFailed        int64                             `json:"eventsFailed"`
	EventsPending       int64                             `json:"eventsPending"`
	ConsecutiveFailures int64                             `json:"consecutiveFailures"`
	LastDelivery        *webhooksv1alpha1.DeliveryRecord  `json:"lastDelivery,omitempty"`
	Recent              []webhooksv1alpha1.DeliveryRecord `json:"recent,omitempty"`
	// Buckets maps the start (Unix seconds) of each 5-minute bucket of the last
	// 24 hours to [delivered, failed] events finished in it.
	Buckets map[int64][2]int64 `json:"buckets,omitempty"`

	// Delivering condition.
	DeliveringStatus  metav1.ConditionStatus `json:"deliveringStatus,omitempty"`
	DeliveringReason  string                 `json:"deliveringReason,omitempty"`
	DeliveringMessage string                 `json:"deliveringMessage,omitempty"`
	DeliveringSince   time.Time              `json:"deliveringSince,omitzero"`

	// GoneGeneration is the generation that answered 410 Gone; 0 when none.
	GoneGeneration int64 `json:"goneGeneration,omitempty"`

	// Unacked are the outcomes stream sequences folded into this snapshot
	// and not yet acknowledged when it was written: after a crash they come
	// again and must not be counted twice. Every other outcome that comes
	// again was never folded in.
	Unacked []uint64 `json:"unacked,omitempty"`
	// Version increments with every change; the status writer compares it.
	Version uint64 `json:"version"`
}

// apply folds one outcome into the counters.
func (s *EndpointStats) apply(oc *store.Outcome) {
	if oc.Attempted && oc.Attempt == 1 {
		s.TotalEventsSent++
	}
	if oc.Attempt > 1 && s.EventsPending > 0 {
		s.EventsPending-- // the retry this attempt was waiting for has happened
	}
	bucket := oc.Time.Truncate(rateBucket).Unix()
	if s.Buckets == nil {
		s.Buckets = map[int64][2]int64{}
	}
	b := s.Buckets[bucket]
	switch oc.Result {
	case webhooksv1alpha1.ResultSucceeded:
		s.EventsDelivered++
		s.ConsecutiveFailures = 0
		b[0]++
	case webhooksv1alpha1.ResultFailed:
		s.EventsFailed++
		b[1]++
		if oc.Attempted {
			s.ConsecutiveFailures++
		}
	case webhooksv1alpha1.ResultRetrying:
		s.EventsPending++
		s.ConsecutiveFailures++
	}
	s.Buckets[bucket] = b
	if oc.Gone {
		s.GoneGeneration = oc.Generation
	} else if oc.Generation != s.GoneGeneration {
		s.GoneGeneration = 0
	}

	if oc.Attempted || oc.Result == webhooksv1alpha1.ResultFailed {
		rec := webhooksv1alpha1.DeliveryRecord{
			Time:                 metav1.NewTime(oc.Time),
			EventID:              oc.EventID,
			EventType:            oc.EventType,
			Attempt:              oc.Attempt,
			StatusCode:           oc.StatusCode,
			DurationMilliseconds: oc.DurationMS,
			Result:               oc.Result,
			Error:                textutil.Truncate(oc.Error, 1024),
		}
		s.LastDelivery = &rec
		// Newest first, at most RecentDeliveries, shifted in place.
		if len(s.Recent) < RecentDeliveries {
			s.Recent = append(s.Recent, webhooksv1alpha1.DeliveryRecord{})
		}
		copy(s.Recent[1:], s.Recent[:len(s.Recent)-1])
		s.Recent[0] = rec
	}

	status, msg := metav1.ConditionTrue, "The last delivery succeeded"
	if oc.Result != webhooksv1alpha1.ResultSucceeded {
		status = metav1.ConditionFalse
		msg = textutil.Truncate(oc.Error, 1024)
	}
	if status != s.DeliveringStatus || oc.Reason != s.DeliveringReason {
		s.DeliveringSince = oc.Time
	}
	s.DeliveringStatus, s.DeliveringReason, s.DeliveringMessage = status, oc.Reason, msg
	s.Version++
}

// SuccessRate is delivered / (delivered + failed) over the events finished
// in the 24 hours before now, as "99.8%", or "-" when none finished.
func (s *EndpointStats) SuccessRate(now time.Time) string {
	from := now.Add(-24 * time.Hour).Truncate(rateBucket).Unix()
	var ok, failed int64
	for start, b := range s.Buckets {
		if start >= from {
			ok += b[0]
			failed += b[1]
		}
	}
	if ok+failed == 0 {
		return "-"
	}
	rate := float64(ok) * 100 / float64(ok+failed)
	if ok+failed != ok && rate > 99.9 {
		rate = 99.9 // never round a failure away
	}
	return fmt.Sprintf("%.1f%%", rate)
}

// prune drops rate buckets older than 24 hours.
func (s *EndpointStats) prune(now time.Time) {
	from := now.Add(-24 * time.Hour).Truncate(rateBucket).Unix()
	for start := range s.Buckets {
		if start < from {
			delete(s.Buckets, start)
		}
	}
}

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

	mu    sync.Mutex
	stats map[types.UID]*EndpointStats
	dirty map[types.UID]bool
	// held are the outcome messages received and not yet acknowledged. Each
	// is acknowledged once a snapshot listing its sequence is stored and it
	// has been held for DedupeHold.
	held []heldOutcome
	// applied remembers the sequences folded in by this run, until their
	// acknowledgement can no longer be lost (twice the ack wait); skip holds
	// those an earlier run folded in without acknowledging them.
	applied map[uint64]time.Time
	skip    map[uint64]bool
	// seen holds the dedupe keys of the outcomes folded in over the last
	// dedupeWindow, so an event's outcome recorded twice (delivered,
	// recorded, then delivered again because the replica died before its
	// acknowledgement) is counted once.
	seen *dedupeSet
}

// heldOutcome is an outcome message not yet acknowledged.
type heldOutcome struct {
	m   jetstream.Msg
	seq uint64
	uid types.UID
	at  time.Time
}

// DedupeHold is how long an outcome message stays unacknowledged after it
// was folded in. A replica acknowledges a delivery right after its outcome
// is stored; should the leader die in between, the held messages come back
// to the next leader (skipped, not counted again) and give it the dedupe
// keys of the outcomes whose deliveries may come again.
const DedupeHold = 5 * time.Second

// dedupeWindow is how long an outcome's dedupe key is remembered: the time
// within which a delivery whose acknowledgement was lost is attempted again
// (the ack wait) and finishes.
const dedupeWindow = 2 * time.Minute

// statsAckWait is the stats consumer's ack wait; outcomes are acked within
// a persist interval of being folded in.
const statsAckWait = 30 * time.Second

// NewAggregator returns an aggregator over the store's outcomes.
func NewAggregator(st *store.Store, now func() time.Time) *Aggregator {
	if now == nil {
		now = time.Now
	}
	return &Aggregator{store: st, now: now, stats: map[types.UID]*EndpointStats{}, dirty: map[types.UID]bool{},
		applied: map[uint64]time.Time{}, skip: map[uint64]bool{}, seen: newDedupeSet(dedupeWindow, now)}
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
		for _, seq := range st.Unacked {
			a.skip[seq] = true
		}
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

func (a *Aggregator) applyMsg(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	ocs, err := store.DecodeOutcomes(m.Data())
	if err != nil || len(ocs) == 0 {
		_ = m.Term()
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	uid := ocs[0].UID
	st := a.stats[uid]
	if st == nil {
		st = &EndpointStats{UID: uid, Namespace: ocs[0].Namespace, Name: ocs[0].Name}
		a.stats[uid] = st
	}
	seq := meta.Sequence.Stream
	if _, done := a.applied[seq]; done {
		return // redelivered while held: already held
	}
	a.applied[seq] = a.now()
	fold := !a.skip[seq]
	for i := range ocs {
		oc := &ocs[i]
		if oc.UID != uid {
			continue // one endpoint per message, by construction
		}
		if key, ok := dedupeKey(oc); ok {
			if a.seen.has(key) {
				continue
			}
			a.seen.add(key)
		}
		if fold {
			st.apply(oc)
		}
	}
	st.Unacked = append(st.Unacked, seq)
	a.dirty[uid] = true
	a.held = append(a.held, heldOutcome{m: m, seq: seq, uid: uid, at: a.now()})
}

// persist writes the changed stats, then acknowledges the outcomes folded
// into them.
func (a *Aggregator) persist(ctx context.Context) {
	a.mu.Lock()
	now := a.now()
	// Messages held long enough are acknowledged after this write, which
	// lists them (and every other held message) as Unacked.
	ackBefore := now.Add(-DedupeHold)
	var toAck []heldOutcome
	snapshot := len(a.held)
	kept := a.held[:0:0]
	for _, h := range a.held {
		if h.at.Before(ackBefore) {
			toAck = append(toAck, h)
			a.dirty[h.uid] = true // its Unacked list shrinks
		} else {
			kept = append(kept, h)
		}
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
	if len(toAck) == 0 {
		a.pruneApplied(now)
		return
	}
	for _, h := range toAck {
		_ = h.m.Ack()
	}
	acked := make(map[uint64]bool, len(toAck))
	for _, h := range toAck {
		acked[h.seq] = true
	}
	a.mu.Lock()
	a.held = append(kept, a.held[snapshot:]...) // and those received meanwhile
	for _, h := range toAck {
		if st := a.stats[h.uid]; st != nil {
			st.Unacked = slices.DeleteFunc(st.Unacked, func(seq uint64) bool { return acked[seq] })
		}
	}
	a.mu.Unlock()
	a.pruneApplied(now)
}

// pruneApplied forgets the sequences whose acknowledgement can no longer be
// lost, and the dedupe keys past their window.
func (a *Aggregator) pruneApplied(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	forgetBefore := now.Add(-2 * statsAckWait)
	for seq, at := range a.applied {
		if at.Before(forgetBefore) {
			delete(a.applied, seq)
		}
	}
	a.seen.prune()
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
