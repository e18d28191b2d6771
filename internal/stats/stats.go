// Package stats folds the outcomes of delivery attempts into each
// endpoint's counters (EndpointStats), once each however often an outcome
// is recorded, and keeps them in the store's stats bucket: the Aggregator.
//
// What changes and what counts is decided apart from the code that acts on
// it: EndpointStats.apply is made of plain functions of the stats and the
// outcome (stats.go), and a ledger decides which outcomes are folded in and
// when their messages are acknowledged (ledger.go, dedupe.go), reading no
// clock. The Aggregator (aggregator.go) consumes, folds, stores and
// acknowledges as they decide.
package stats

import (
	"fmt"
	"time"

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

// apply folds one outcome into the stats. Each part is decided from the
// stats and the outcome alone, by the functions below.
func (s *EndpointStats) apply(oc *store.Outcome) {
	s.setCounters(s.counters().after(oc))
	s.addToRate(oc)
	s.GoneGeneration = goneGeneration(s.GoneGeneration, oc)
	if rec, ok := deliveryRecord(oc); ok {
		s.remember(rec)
	}
	s.setDelivering(s.delivering().after(oc))
	s.Version++
}

// counters are the event counts an outcome changes.
type counters struct {
	sent, delivered, failed, pending, consecutiveFailures int64
}

func (s *EndpointStats) counters() counters {
	return counters{s.TotalEventsSent, s.EventsDelivered, s.EventsFailed, s.EventsPending, s.ConsecutiveFailures}
}

func (s *EndpointStats) setCounters(c counters) {
	s.TotalEventsSent, s.EventsDelivered, s.EventsFailed, s.EventsPending, s.ConsecutiveFailures =
		c.sent, c.delivered, c.failed, c.pending, c.consecutiveFailures
}

// after returns the counts once oc is folded in. An event is sent when its
// first attempt is made. An outcome of a later attempt, or of a give-up
// after attempts were made, ends the wait of one pending event (the count
// never goes below zero), and a retrying outcome starts one.
//
// A replay's first outcome (oc.ReplacesFailure set) is of an event that
// failed for good before and was counted so: it is no longer failed (it is
// given another go), and it is not sent again. Its final outcome then
// counts as any other, so each event is counted once, delivered or failed,
// by its last outcome. A resend's first outcome of an event delivered
// before (oc.ReplacesSuccess set) likewise takes back that success.
//
// consecutiveFailures counts events, not attempts: those that failed for
// good (whatever attempt ended them) since the last event delivered. An
// attempt to be retried changes it not; a success ends the run.
func (c counters) after(oc *store.Outcome) counters {
	switch {
	case !oc.ReplacesFailure.IsZero():
		if c.failed > 0 {
			c.failed--
		}
	case !oc.ReplacesSuccess.IsZero():
		// A resend of a delivered event: it is no longer counted delivered
		// until the resend's final outcome says again, and not sent again.
		if c.delivered > 0 {
			c.delivered--
		}
	case oc.Attempted && oc.Attempt == 1:
		c.sent++
	}
	// A later attempt, or a give-up without an attempt after some were
	// made (the retry aged out), is of an event that was pending.
	if (oc.Attempt > 1 || !oc.Attempted && oc.Attempt >= 1) && c.pending > 0 {
		c.pending--
	}
	switch oc.Result {
	case webhooksv1alpha1.ResultSucceeded:
		c.delivered++
		c.consecutiveFailures = 0
	case webhooksv1alpha1.ResultFailed:
		c.failed++
		c.consecutiveFailures++
	case webhooksv1alpha1.ResultRetrying:
		c.pending++
	}
	return c
}

// addToRate counts a finished event in the success rate's bucket of the
// outcome's time: delivered or failed. A retrying outcome finishes nothing
// but still marks its bucket. A replay's first outcome takes back the
// failure it replaces from that failure's bucket (when it is still within
// the day), so the rate counts each event once, by its final outcome.
func (s *EndpointStats) addToRate(oc *store.Outcome) {
	if s.Buckets == nil {
		s.Buckets = map[int64][2]int64{}
	}
	if !oc.ReplacesFailure.IsZero() {
		start := oc.ReplacesFailure.Truncate(rateBucket).Unix()
		if b, ok := s.Buckets[start]; ok && b[1] > 0 {
			b[1]--
			s.Buckets[start] = b
		}
	}
	if !oc.ReplacesSuccess.IsZero() {
		start := oc.ReplacesSuccess.Truncate(rateBucket).Unix()
		if b, ok := s.Buckets[start]; ok && b[0] > 0 {
			b[0]--
			s.Buckets[start] = b
		}
	}
	bucket := oc.Time.Truncate(rateBucket).Unix()
	b := s.Buckets[bucket]
	switch oc.Result {
	case webhooksv1alpha1.ResultSucceeded:
		b[0]++
	case webhooksv1alpha1.ResultFailed:
		b[1]++
	}
	s.Buckets[bucket] = b
}

// goneGeneration returns the generation marked 410 Gone once oc is folded
// in, given the one marked now (0 for none): oc's generation when it
// answered 410; unchanged for another outcome of the marked generation;
// none for an outcome of another generation (its spec changed).
func goneGeneration(marked int64, oc *store.Outcome) int64 {
	switch {
	case oc.Gone:
		return oc.Generation
	case oc.Generation != marked:
		return 0
	default:
		return marked
	}
}

// deliveryRecord returns what status.lastDelivery and recentDeliveries
// show of oc, and false for an outcome they do not show: those without an
// attempt, except a give-up.
func deliveryRecord(oc *store.Outcome) (webhooksv1alpha1.DeliveryRecord, bool) {
	if !oc.Attempted && oc.Result != webhooksv1alpha1.ResultFailed {
		return webhooksv1alpha1.DeliveryRecord{}, false
	}
	return webhooksv1alpha1.DeliveryRecord{
		Time:                 metav1.NewTime(oc.Time),
		EventID:              oc.EventID,
		EventType:            oc.EventType,
		Attempt:              oc.Attempt,
		StatusCode:           oc.StatusCode,
		DurationMilliseconds: oc.DurationMS,
		Result:               oc.Result,
		Error:                textutil.Truncate(oc.Error, 1024),
	}, true
}

// remember makes rec the last delivery and the newest of the recent ones,
// which keep at most RecentDeliveries, newest first, shifted in place.
func (s *EndpointStats) remember(rec webhooksv1alpha1.DeliveryRecord) {
	s.LastDelivery = &rec
	if len(s.Recent) < RecentDeliveries {
		s.Recent = append(s.Recent, webhooksv1alpha1.DeliveryRecord{})
	}
	copy(s.Recent[1:], s.Recent[:len(s.Recent)-1])
	s.Recent[0] = rec
}

// deliveringCondition is the Delivering condition as the stats keep it.
type deliveringCondition struct {
	status          metav1.ConditionStatus
	reason, message string
	since           time.Time
}

func (s *EndpointStats) delivering() deliveringCondition {
	return deliveringCondition{s.DeliveringStatus, s.DeliveringReason, s.DeliveringMessage, s.DeliveringSince}
}

func (s *EndpointStats) setDelivering(c deliveringCondition) {
	s.DeliveringStatus, s.DeliveringReason, s.DeliveringMessage, s.DeliveringSince = c.status, c.reason, c.message, c.since
}

// after returns the condition once oc is folded in: True after a success,
// False with the outcome's error otherwise, with the outcome's reason. It
// changes (since moves to the outcome's time) when the status or the
// reason does.
func (c deliveringCondition) after(oc *store.Outcome) deliveringCondition {
	next := deliveringCondition{status: metav1.ConditionTrue, reason: oc.Reason, message: "The last delivery succeeded", since: c.since}
	if oc.Result != webhooksv1alpha1.ResultSucceeded {
		next.status = metav1.ConditionFalse
		next.message = textutil.Truncate(oc.Error, 1024)
	}
	if next.status != c.status || next.reason != c.reason {
		next.since = oc.Time
	}
	return next
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
