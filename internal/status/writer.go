package status

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wablast/webhook-operator/internal/stats"
)

// Writer runs the Aggregator and writes each endpoint's counters into
// its WebhookConfig's status in batches: at most once per FlushInterval per
// resource, and only when something changed. It runs on the leader only.
type Writer struct {
	Aggregator    *stats.Aggregator
	Client        client.Client
	Recorder      events.EventRecorder
	FlushInterval time.Duration
	Now           func() time.Time
	Logger        logr.Logger

	written map[types.UID]writtenState
	flushes atomic.Uint64
}

// Flushes is how many flushes have completed: a test that checks nothing
// is written while nothing changes waits for flushes, not for time.
func (w *Writer) Flushes() uint64 { return w.flushes.Load() }

type writtenState struct {
	version     uint64
	successRate string
	delivering  metav1.ConditionStatus
	reason      string
}

// +kubebuilder:rbac:groups=webhooks.wablast.io,resources=webhookconfigs/status,verbs=get;update;patch

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (w *Writer) NeedLeaderElection() bool { return true }

// Start folds outcomes and flushes status until ctx is done.
func (w *Writer) Start(ctx context.Context) error {
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
func (w *Writer) flush(ctx context.Context) {
	defer w.flushes.Add(1)
	now := w.Now()
	for _, st := range w.Aggregator.Snapshot() {
		rate := st.SuccessRate(now)
		prev, seen := w.written[st.UID]
		if seen && prev.version == st.Version && prev.successRate == rate {
			continue
		}
		err := Apply(ctx, w.Client, Delivery(&st, rate), DeliveryFieldManager)
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

func (w *Writer) recordDelivering(st *stats.EndpointStats) {
	RecordEvent(w.Recorder, st.Namespace, st.Name, st.UID, eventType(st.DeliveringStatus), st.DeliveringReason, "Deliver", st.DeliveringMessage)
}
