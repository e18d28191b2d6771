package dispatch

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/stats"
)

// StatusFieldManager is the server-side apply field manager of the delivery
// fields of status. The controller owns the other fields under its own.
const StatusFieldManager = "webhook-operator-dispatcher"

// StatusWriter runs the Aggregator and writes each endpoint's counters into
// its WebhookConfig's status in batches: at most once per FlushInterval per
// resource, and only when something changed. It runs on the leader only.
type StatusWriter struct {
	Aggregator    *stats.Aggregator
	Client        client.Client
	Recorder      events.EventRecorder
	FlushInterval time.Duration
	Now           func() time.Time
	Logger        logr.Logger

	written map[types.UID]writtenState
}

type writtenState struct {
	version     uint64
	successRate string
	delivering  metav1.ConditionStatus
	reason      string
}

// +kubebuilder:rbac:groups=webhooks.wablast.io,resources=webhookconfigs/status,verbs=get;update;patch

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (w *StatusWriter) NeedLeaderElection() bool { return true }

// Start folds outcomes and flushes status until ctx is done.
func (w *StatusWriter) Start(ctx context.Context) error {
	if w.FlushInterval <= 0 {
		w.FlushInterval = 5 * time.Second
	}
	if w.Now == nil {
		w.Now = time.Now
	}
	if w.Logger.GetSink() == nil {
		w.Logger = logr.Discard()
	}
	w.written = map[types.UID]writtenState{}
	persistEvery := min(w.FlushInterval, time.Second)
	errc := make(chan error, 1)
	go func() { errc <- w.Aggregator.Run(ctx, persistEvery, w.Logger) }()

	t := time.NewTicker(w.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			w.flush(ctx)
		case err := <-errc:
			return err
		case <-ctx.Done():
			return <-errc
		}
	}
}

// flush writes the status of every endpoint whose stats changed since the
// last write, or whose success rate moved with time.
func (w *StatusWriter) flush(ctx context.Context) {
	now := w.Now()
	for _, st := range w.Aggregator.Snapshot() {
		rate := st.SuccessRate(now)
		prev, seen := w.written[st.UID]
		if seen && prev.version == st.Version && prev.successRate == rate {
			continue
		}
		err := w.Client.Status().Apply(ctx, statusApply(&st, rate), client.FieldOwner(StatusFieldManager), client.ForceOwnership)
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// The resource is gone, or replaced by a new one of the same name
			// (the apply carries the UID): its counters go with it.
			w.Aggregator.Forget(ctx, st.UID)
			delete(w.written, st.UID)
			continue
		case err != nil:
			w.Logger.Error(err, "Writing delivery status failed; retrying at the next flush", "namespace", st.Namespace, "name", st.Name)
			continue
		}
		if seen && (prev.delivering != st.DeliveringStatus || prev.reason != st.DeliveringReason) {
			w.recordDelivering(&st)
		}
		w.written[st.UID] = writtenState{version: st.Version, successRate: rate, delivering: st.DeliveringStatus, reason: st.DeliveringReason}
	}
}

func (w *StatusWriter) recordDelivering(st *stats.EndpointStats) {
	eventType := corev1.EventTypeNormal
	if st.DeliveringStatus != metav1.ConditionTrue {
		eventType = corev1.EventTypeWarning
	}
	recordEvent(w.Recorder, st.Namespace, st.Name, st.UID, eventType, st.DeliveringReason, "Deliver", st.DeliveringMessage)
}

// statusApply renders the dispatcher-owned status fields as an apply configuration.
func statusApply(st *stats.EndpointStats, rate string) runtime.ApplyConfiguration {
	status := map[string]any{
		"totalEventsSent":     st.TotalEventsSent,
		"eventsDelivered":     st.EventsDelivered,
		"eventsFailed":        st.EventsFailed,
		"eventsPending":       st.EventsPending,
		"consecutiveFailures": st.ConsecutiveFailures,
		"successRate":         rate,
	}
	if st.LastDelivery != nil {
		status["lastDelivery"] = recordMap(st.LastDelivery)
	}
	if len(st.Recent) > 0 {
		recent := make([]any, 0, len(st.Recent))
		for i := range st.Recent {
			recent = append(recent, recordMap(&st.Recent[i]))
		}
		status["recentDeliveries"] = recent
	}
	if st.DeliveringStatus != "" {
		status["conditions"] = []any{map[string]any{
			"type":               webhooksv1alpha1.ConditionDelivering,
			"status":             string(st.DeliveringStatus),
			"reason":             st.DeliveringReason,
			"message":            st.DeliveringMessage,
			"lastTransitionTime": st.DeliveringSince.UTC().Format(time.RFC3339),
		}}
	}
	return statusApplyConfiguration(st.Namespace, st.Name, st.UID, status)
}

func recordMap(r *webhooksv1alpha1.DeliveryRecord) map[string]any {
	m := map[string]any{
		"time":                 r.Time.UTC().Format(time.RFC3339),
		"eventID":              r.EventID,
		"eventType":            r.EventType,
		"attempt":              int64(r.Attempt),
		"durationMilliseconds": r.DurationMilliseconds,
		"result":               string(r.Result),
	}
	if r.StatusCode != 0 {
		m["statusCode"] = int64(r.StatusCode)
	}
	if r.Error != "" {
		m["error"] = r.Error
	}
	return m
}
