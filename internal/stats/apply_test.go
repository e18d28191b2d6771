package stats

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

// Outcomes as the worker records them, one constructor per kind.

// succeeded is attempt n of event id, answered 2xx.
func succeeded(id string, n int32) store.Outcome {
	return store.Outcome{EventID: id, Generation: 1, Attempt: n, Attempted: true, StatusCode: 200,
		Result: webhooksv1alpha1.ResultSucceeded, Reason: webhooksv1alpha1.ReasonDeliverySucceeded, Time: t0}
}

// retrying is attempt n of event id, failed and to be retried.
func retrying(id string, n int32) store.Outcome {
	return store.Outcome{EventID: id, Generation: 1, Attempt: n, Attempted: true, StatusCode: 503,
		Result: webhooksv1alpha1.ResultRetrying, Reason: webhooksv1alpha1.ReasonDeliveryFailing, Error: "receiver answered 503", Time: t0}
}

// failed is attempt n of event id, failed for good.
func failed(id string, n int32) store.Outcome {
	oc := retrying(id, n)
	oc.Result = webhooksv1alpha1.ResultFailed
	oc.Error += "; gave up after 3 attempts (maxAttempts)"
	return oc
}

// gaveUp is event id given up after `made` attempts without another one
// (older than maxAgeSeconds).
func gaveUp(id string, made int32) store.Outcome { //nolint:unparam // the id is part of what a case reads
	return store.Outcome{EventID: id, Generation: 1, Attempt: made,
		Result: webhooksv1alpha1.ResultFailed, Reason: webhooksv1alpha1.ReasonDeliveryFailing, Error: "gave up: the event is older than maxAgeSeconds (72h0m0s)", Time: t0}
}

// gone is attempt n of event id answered 410 at the given generation.
func gone(id string, n int32, generation int64) store.Outcome { //nolint:unparam // the attempt is part of what a case reads
	return store.Outcome{EventID: id, Generation: generation, Attempt: n, Attempted: true, StatusCode: 410, Gone: true,
		Result: webhooksv1alpha1.ResultFailed, Reason: webhooksv1alpha1.ReasonEndpointGone, Error: "receiver answered 410 Gone", Time: t0}
}

// replayed is outcome oc as the first of a replay of its event, which had
// failed for good at failedAt.
func replayed(oc store.Outcome, failedAt time.Time) store.Outcome {
	oc.ReplacesFailure = failedAt
	return oc
}

// resent is outcome oc as the first of a resend of its event, which had
// been delivered at deliveredAt.
func resent(oc store.Outcome, deliveredAt time.Time) store.Outcome {
	oc.ReplacesSuccess = deliveredAt
	return oc
}

func TestCountersAfterAnOutcome(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before counters
		oc     store.Outcome
		want   counters
	}{{
		name: "a first attempt that succeeds sends and delivers an event",
		oc:   succeeded("e1", 1),
		want: counters{sent: 1, delivered: 1},
	}, {
		name:   "a success ends a run of failed events",
		before: counters{sent: 3, failed: 2, consecutiveFailures: 2},
		oc:     succeeded("e3", 1),
		want:   counters{sent: 4, delivered: 1, failed: 2},
	}, {
		name: "a first attempt to be retried sends an event that is pending; no event failed",
		oc:   retrying("e1", 1),
		want: counters{sent: 1, pending: 1},
	}, {
		name:   "the retry that succeeds is no longer pending and is delivered",
		before: counters{sent: 1, pending: 1, consecutiveFailures: 1},
		oc:     succeeded("e1", 2),
		want:   counters{sent: 1, delivered: 1},
	}, {
		name:   "a retry to be retried again stays pending and fails no event",
		before: counters{sent: 2, failed: 1, pending: 1, consecutiveFailures: 1},
		oc:     retrying("e1", 2),
		want:   counters{sent: 2, failed: 1, pending: 1, consecutiveFailures: 1},
	}, {
		name:   "the last attempt that fails ends the wait, fails the event and adds one event to the run",
		before: counters{sent: 2, failed: 1, pending: 1, consecutiveFailures: 1},
		oc:     failed("e1", 3),
		want:   counters{sent: 2, failed: 2, consecutiveFailures: 2},
	}, {
		name: "a first attempt that fails for good sends and fails the event",
		oc:   failed("e1", 1),
		want: counters{sent: 1, failed: 1, consecutiveFailures: 1},
	}, {
		name: "a 410 Gone fails the event like any failure",
		oc:   gone("e1", 1, 3),
		want: counters{sent: 1, failed: 1, consecutiveFailures: 1},
	}, {
		name:   "a give-up after retries ends the wait and fails the event",
		before: counters{sent: 1, pending: 1},
		oc:     gaveUp("e1", 2),
		want:   counters{sent: 1, failed: 1, consecutiveFailures: 1},
	}, {
		name:   "a give-up of a retry that aged out after its first attempt ends the wait",
		before: counters{sent: 1, pending: 1},
		oc:     gaveUp("e1", 1),
		want:   counters{sent: 1, failed: 1, consecutiveFailures: 1},
	}, {
		name:   "a give-up before any attempt sends nothing and fails the event",
		before: counters{sent: 4, failed: 4, consecutiveFailures: 4},
		oc:     gaveUp("e1", 0),
		want:   counters{sent: 4, failed: 5, consecutiveFailures: 5},
	}, {
		name:   "a replay that delivers a failed event: delivered, no longer failed, not sent again",
		before: counters{sent: 1, failed: 1, consecutiveFailures: 1},
		oc:     replayed(succeeded("e1", 1), t0.Add(-time.Hour)),
		want:   counters{sent: 1, delivered: 1},
	}, {
		name:   "a replay that fails again: still one failed event, and one more in the run",
		before: counters{sent: 1, failed: 1, consecutiveFailures: 1},
		oc:     replayed(failed("e1", 1), t0.Add(-time.Hour)),
		want:   counters{sent: 1, failed: 1, consecutiveFailures: 2},
	}, {
		name:   "a replay to be retried: pending, no longer failed",
		before: counters{sent: 1, failed: 1, consecutiveFailures: 1},
		oc:     replayed(retrying("e1", 1), t0.Add(-time.Hour)),
		want:   counters{sent: 1, pending: 1, consecutiveFailures: 1},
	}, {
		name:   "a replay of a failure the counters never saw (counted before an upgrade) never makes failed negative",
		before: counters{sent: 1, delivered: 1},
		oc:     replayed(succeeded("e1", 1), t0.Add(-time.Hour)),
		want:   counters{sent: 1, delivered: 2},
	}, {
		name:   "a resend that delivers a delivered event again: the counters do not move",
		before: counters{sent: 1, delivered: 1},
		oc:     resent(succeeded("e1", 1), t0.Add(-time.Hour)),
		want:   counters{sent: 1, delivered: 1},
	}, {
		name:   "a resend of a delivered event that fails: failed, no longer delivered, not sent again",
		before: counters{sent: 1, delivered: 1},
		oc:     resent(failed("e1", 1), t0.Add(-time.Hour)),
		want:   counters{sent: 1, failed: 1, consecutiveFailures: 1},
	}, {
		name:   "a resend of a delivered event to be retried: pending, no longer delivered",
		before: counters{sent: 1, delivered: 1},
		oc:     resent(retrying("e1", 1), t0.Add(-time.Hour)),
		want:   counters{sent: 1, pending: 1},
	}, {
		name: "a later attempt's outcome without a pending retry never makes pending negative",
		oc:   succeeded("e1", 2),
		want: counters{delivered: 1},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.before.after(&tc.oc); got != tc.want {
				t.Errorf("after %s: %+v, want %+v", tc.oc.Result, got, tc.want)
			}
		})
	}
}

func TestGoneGeneration(t *testing.T) {
	ok := func(generation int64) store.Outcome {
		oc := succeeded("e1", 1)
		oc.Generation = generation
		return oc
	}
	for _, tc := range []struct {
		name   string
		marked int64
		oc     store.Outcome
		want   int64
	}{
		{"a 410 marks its generation", 0, gone("e1", 1, 3), 3},
		{"a 410 at a newer generation moves the mark", 3, gone("e1", 1, 4), 4},
		{"another outcome of the marked generation keeps the mark", 3, ok(3), 3},
		{"an outcome of another generation (the spec changed) clears the mark", 3, ok(4), 0},
		{"no mark stays none", 0, ok(2), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := goneGeneration(tc.marked, &tc.oc); got != tc.want {
				t.Errorf("goneGeneration(%d) = %d, want %d", tc.marked, got, tc.want)
			}
		})
	}
}

func TestDeliveryRecord(t *testing.T) {
	long := retrying("e1", 1)
	long.Error = strings.Repeat("x", 2000)
	unattempted := succeeded("e1", 1)
	unattempted.Attempted = false
	for _, tc := range []struct {
		name   string
		oc     store.Outcome
		want   bool
		errLen int
	}{
		{"a success is shown", succeeded("e1", 1), true, 0},
		{"an attempt to be retried is shown", retrying("e1", 1), true, len(retrying("e1", 1).Error)},
		{"a give-up without an attempt is shown", gaveUp("e1", 2), true, len(gaveUp("e1", 2).Error)},
		{"an outcome without an attempt that is no give-up is not", unattempted, false, 0},
		{"an error is cut to 1024 bytes", long, true, 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, ok := deliveryRecord(&tc.oc)
			if ok != tc.want {
				t.Fatalf("shown %v, want %v", ok, tc.want)
			}
			if !ok {
				return
			}
			want := webhooksv1alpha1.DeliveryRecord{
				Time: metav1.NewTime(tc.oc.Time), EventID: tc.oc.EventID, EventType: tc.oc.EventType, Attempt: tc.oc.Attempt,
				StatusCode: tc.oc.StatusCode, DurationMilliseconds: tc.oc.DurationMS, Result: tc.oc.Result, Error: rec.Error,
			}
			if rec != want {
				t.Errorf("record %+v, want %+v", rec, want)
			}
			if len(rec.Error) != tc.errLen || !strings.HasPrefix(tc.oc.Error, strings.TrimSuffix(rec.Error, "...")) {
				t.Errorf("error of %d bytes %q, want %d bytes from %q", len(rec.Error), rec.Error, tc.errLen, tc.oc.Error)
			}
		})
	}
}

func TestDeliveringConditionAfter(t *testing.T) {
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	at := func(oc store.Outcome, t time.Time) store.Outcome {
		oc.Time = t
		return oc
	}
	succeeding := deliveringCondition{metav1.ConditionTrue, webhooksv1alpha1.ReasonDeliverySucceeded, "The last delivery succeeded", t0}
	failing := deliveringCondition{metav1.ConditionFalse, webhooksv1alpha1.ReasonDeliveryFailing, "receiver answered 503", t0}
	long := retrying("e1", 1)
	long.Error = strings.Repeat("é", 1000)
	for _, tc := range []struct {
		name   string
		before deliveringCondition
		oc     store.Outcome
		want   deliveringCondition
	}{{
		name: "the first success makes it True from then",
		oc:   at(succeeded("e1", 1), t1),
		want: deliveringCondition{metav1.ConditionTrue, webhooksv1alpha1.ReasonDeliverySucceeded, "The last delivery succeeded", t1},
	}, {
		name:   "another success keeps it True since before",
		before: succeeding,
		oc:     at(succeeded("e2", 1), t1),
		want:   succeeding,
	}, {
		name:   "a failed attempt makes it False from then, with the error",
		before: succeeding,
		oc:     at(retrying("e2", 1), t1),
		want:   deliveringCondition{metav1.ConditionFalse, webhooksv1alpha1.ReasonDeliveryFailing, "receiver answered 503", t1},
	}, {
		name:   "another failure for the same reason keeps since and takes the new error",
		before: failing,
		oc:     at(failed("e2", 3), t2),
		want:   deliveringCondition{metav1.ConditionFalse, webhooksv1alpha1.ReasonDeliveryFailing, failed("e2", 3).Error, t0},
	}, {
		name:   "a failure for another reason moves since",
		before: failing,
		oc:     at(gone("e2", 1, 1), t2),
		want:   deliveringCondition{metav1.ConditionFalse, webhooksv1alpha1.ReasonEndpointGone, "receiver answered 410 Gone", t2},
	}, {
		name:   "a success after failures makes it True from then",
		before: failing,
		oc:     at(succeeded("e2", 2), t2),
		want:   deliveringCondition{metav1.ConditionTrue, webhooksv1alpha1.ReasonDeliverySucceeded, "The last delivery succeeded", t2},
	}, {
		name:   "the message is cut to 1024 bytes on a rune boundary",
		before: failing,
		oc:     long,
		want:   deliveringCondition{metav1.ConditionFalse, webhooksv1alpha1.ReasonDeliveryFailing, strings.Repeat("é", 510) + "...", t0},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.before.after(&tc.oc); got != tc.want {
				t.Errorf("after: %+v, want %+v", got, tc.want)
			}
		})
	}
}

// An event's outcomes folded in one after another, as the aggregator does:
// every part of the stats, together.
func TestApplyFoldsAnEventsOutcomes(t *testing.T) {
	bucket := t0.Unix() // t0 starts a 5-minute bucket
	for _, tc := range []struct {
		name     string
		outcomes []store.Outcome
		want     counters
		rate     [2]int64 // [delivered, failed] in t0's bucket
		recent   []string // event/attempt, newest first
		gone     int64
		status   metav1.ConditionStatus
		reason   string
	}{{
		name:     "first attempt succeeds",
		outcomes: []store.Outcome{succeeded("e1", 1)},
		want:     counters{sent: 1, delivered: 1},
		rate:     [2]int64{1, 0},
		recent:   []string{"e1/1"},
		status:   metav1.ConditionTrue, reason: webhooksv1alpha1.ReasonDeliverySucceeded,
	}, {
		name:     "retried, then succeeds",
		outcomes: []store.Outcome{retrying("e1", 1), retrying("e1", 2), succeeded("e1", 3)},
		want:     counters{sent: 1, delivered: 1},
		rate:     [2]int64{1, 0},
		recent:   []string{"e1/3", "e1/2", "e1/1"},
		status:   metav1.ConditionTrue, reason: webhooksv1alpha1.ReasonDeliverySucceeded,
	}, {
		name:     "retried, then failed for good: one event failed",
		outcomes: []store.Outcome{retrying("e1", 1), retrying("e1", 2), failed("e1", 3)},
		want:     counters{sent: 1, failed: 1, consecutiveFailures: 1},
		rate:     [2]int64{0, 1},
		recent:   []string{"e1/3", "e1/2", "e1/1"},
		status:   metav1.ConditionFalse, reason: webhooksv1alpha1.ReasonDeliveryFailing,
	}, {
		name:     "retried, then given up as too old",
		outcomes: []store.Outcome{retrying("e1", 1), retrying("e1", 2), gaveUp("e1", 2)},
		want:     counters{sent: 1, failed: 1, consecutiveFailures: 1},
		rate:     [2]int64{0, 1},
		recent:   []string{"e1/2", "e1/2", "e1/1"},
		status:   metav1.ConditionFalse, reason: webhooksv1alpha1.ReasonDeliveryFailing,
	}, {
		name:     "failed for good, then replayed and delivered: counted once, by the replay's outcome",
		outcomes: []store.Outcome{failed("e1", 1), replayed(succeeded("e1", 1), t0)},
		want:     counters{sent: 1, delivered: 1},
		rate:     [2]int64{1, 0},
		recent:   []string{"e1/1", "e1/1"},
		status:   metav1.ConditionTrue, reason: webhooksv1alpha1.ReasonDeliverySucceeded,
	}, {
		name:     "failed for good, replayed, retried, failed again: one failed event",
		outcomes: []store.Outcome{failed("e1", 1), replayed(retrying("e1", 1), t0), failed("e1", 2)},
		want:     counters{sent: 1, failed: 1, consecutiveFailures: 2},
		rate:     [2]int64{0, 1},
		recent:   []string{"e1/2", "e1/1", "e1/1"},
		status:   metav1.ConditionFalse, reason: webhooksv1alpha1.ReasonDeliveryFailing,
	}, {
		name:     "three events of five attempts each failed for good: three consecutive failures",
		outcomes: fiveAttemptsEach("e1", "e2", "e3"),
		want:     counters{sent: 3, failed: 3, consecutiveFailures: 3},
		rate:     [2]int64{0, 3},
		recent:   []string{"e3/5", "e3/4", "e3/3", "e3/2", "e3/1", "e2/5", "e2/4", "e2/3", "e2/2", "e2/1"},
		status:   metav1.ConditionFalse, reason: webhooksv1alpha1.ReasonDeliveryFailing,
	}, {
		name:     "a failure replayed and delivered, then another failure",
		outcomes: []store.Outcome{failed("e1", 1), replayed(succeeded("e1", 1), t0), failed("e2", 1)},
		want:     counters{sent: 2, delivered: 1, failed: 1, consecutiveFailures: 1},
		rate:     [2]int64{1, 1},
		recent:   []string{"e2/1", "e1/1", "e1/1"},
		status:   metav1.ConditionFalse, reason: webhooksv1alpha1.ReasonDeliveryFailing,
	}, {
		name:     "410 Gone, then delivered after the spec changed",
		outcomes: []store.Outcome{gone("e1", 1, 1), func() store.Outcome { oc := succeeded("e2", 1); oc.Generation = 2; return oc }()},
		want:     counters{sent: 2, delivered: 1, failed: 1},
		rate:     [2]int64{1, 1},
		recent:   []string{"e2/1", "e1/1"},
		status:   metav1.ConditionTrue, reason: webhooksv1alpha1.ReasonDeliverySucceeded,
	}, {
		name:     "410 Gone stays marked while the spec does not change",
		outcomes: []store.Outcome{retrying("e1", 1), gone("e2", 1, 1)},
		want:     counters{sent: 2, failed: 1, pending: 1, consecutiveFailures: 1},
		rate:     [2]int64{0, 1},
		recent:   []string{"e2/1", "e1/1"},
		gone:     1,
		status:   metav1.ConditionFalse, reason: webhooksv1alpha1.ReasonEndpointGone,
	}, {
		name:     "only retries: nothing finished, the bucket is marked",
		outcomes: []store.Outcome{retrying("e1", 1)},
		want:     counters{sent: 1, pending: 1},
		rate:     [2]int64{0, 0},
		recent:   []string{"e1/1"},
		status:   metav1.ConditionFalse, reason: webhooksv1alpha1.ReasonDeliveryFailing,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var s EndpointStats
			for i := range tc.outcomes {
				s.apply(&tc.outcomes[i])
			}
			if got := s.counters(); got != tc.want {
				t.Errorf("counters %+v, want %+v", got, tc.want)
			}
			if len(s.Buckets) != 1 || s.Buckets[bucket] != tc.rate {
				t.Errorf("rate buckets %v, want {%d: %v}", s.Buckets, bucket, tc.rate)
			}
			var recent []string
			for _, r := range s.Recent {
				recent = append(recent, fmt.Sprintf("%s/%d", r.EventID, r.Attempt))
			}
			if fmt.Sprint(recent) != fmt.Sprint(tc.recent) {
				t.Errorf("recent %v, want %v", recent, tc.recent)
			}
			if s.LastDelivery == nil || *s.LastDelivery != s.Recent[0] {
				t.Errorf("last delivery %+v, want the newest recent one", s.LastDelivery)
			}
			if s.GoneGeneration != tc.gone {
				t.Errorf("gone generation %d, want %d", s.GoneGeneration, tc.gone)
			}
			if s.DeliveringStatus != tc.status || s.DeliveringReason != tc.reason {
				t.Errorf("Delivering %s/%s, want %s/%s", s.DeliveringStatus, s.DeliveringReason, tc.status, tc.reason)
			}
			if s.Version != uint64(len(tc.outcomes)) {
				t.Errorf("version %d, want one per outcome (%d)", s.Version, len(tc.outcomes))
			}
		})
	}
}

// fiveAttemptsEach is, for each event, four retried attempts and a fifth
// that fails for good.
func fiveAttemptsEach(ids ...string) []store.Outcome {
	var ocs []store.Outcome
	for _, id := range ids {
		for n := int32(1); n < 5; n++ {
			ocs = append(ocs, retrying(id, n))
		}
		ocs = append(ocs, failed(id, 5))
	}
	return ocs
}

// A replay's outcome takes the failure it replaces out of the success rate
// (from that failure's bucket, when it is within the day) and counts its
// own: the rate counts each event once, by its final outcome.
func TestSuccessRateCountsAReplayedEventOnce(t *testing.T) {
	var s EndpointStats
	earlier := t0.Add(-2 * time.Hour)
	for i := range 6 {
		oc := succeeded(fmt.Sprintf("ok%d", i), 1)
		oc.Time = earlier
		s.apply(&oc)
	}
	var failures []time.Time
	for i := range 3 {
		oc := failed(fmt.Sprintf("e%d", i), 1)
		oc.Time = earlier.Add(time.Duration(i) * 10 * time.Minute) // three buckets
		failures = append(failures, oc.Time)
		s.apply(&oc)
	}
	if got := s.SuccessRate(t0); got != "66.7%" {
		t.Fatalf("before the replay %s, want 66.7%%", got)
	}
	for i, at := range failures {
		oc := replayed(succeeded(fmt.Sprintf("e%d", i), 1), at)
		s.apply(&oc)
	}
	if got := s.SuccessRate(t0); got != "100.0%" {
		t.Errorf("every event arrived: %s, want 100.0%%", got)
	}
	if c := s.counters(); c != (counters{sent: 9, delivered: 9}) {
		t.Errorf("counters %+v, want 9 sent and delivered", c)
	}
	// A failure older than the day is no longer in the rate: its replay
	// adds its success and takes nothing away.
	var old EndpointStats
	oc := failed("e9", 1)
	oc.Time = t0.Add(-25 * time.Hour)
	old.apply(&oc)
	old.prune(t0)
	r := replayed(succeeded("e9", 1), oc.Time)
	old.apply(&r)
	if got := old.SuccessRate(t0); got != "100.0%" {
		t.Errorf("replay of a failure older than the day: %s, want 100.0%%", got)
	}
}

func TestRecentDeliveriesKeepTheNewest(t *testing.T) {
	var s EndpointStats
	for i := 1; i <= RecentDeliveries+2; i++ {
		oc := succeeded(fmt.Sprintf("e%d", i), 1)
		s.apply(&oc)
	}
	if len(s.Recent) != RecentDeliveries {
		t.Fatalf("%d recent deliveries, want %d", len(s.Recent), RecentDeliveries)
	}
	if first, last := s.Recent[0].EventID, s.Recent[RecentDeliveries-1].EventID; first != "e12" || last != "e3" {
		t.Errorf("recent from %s to %s, want from e12 to e3", first, last)
	}
}

func TestSuccessRateAndPruneOverTheLastDay(t *testing.T) {
	now := t0.Add(24 * time.Hour)
	s := EndpointStats{Buckets: map[int64][2]int64{
		t0.Add(-rateBucket).Unix(): {5, 5}, // over a day old
		t0.Unix():                  {9999, 1},
		now.Unix():                 {0, 0},
	}}
	if got := s.SuccessRate(now); got != "99.9%" {
		t.Errorf("success rate %s, want 99.9%% (a failure is never rounded away)", got)
	}
	s.prune(now)
	if _, ok := s.Buckets[t0.Add(-rateBucket).Unix()]; ok || len(s.Buckets) != 2 {
		t.Errorf("after prune %v, want the last day's buckets only", s.Buckets)
	}
	if got := (&EndpointStats{}).SuccessRate(now); got != "-" {
		t.Errorf("success rate with nothing finished %s, want -", got)
	}
}
