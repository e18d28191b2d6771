package delivery

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/store"
)

// forgetTimeout bounds the purges of a deleted resource's deliveries.
const forgetTimeout = 30 * time.Second

// forgottenFor is how long the retry pump remembers a deleted resource, to
// drop its retries waiting in the on-disk queue when they fall due. A retry
// waits at most the endpoint's maxBackoff, which the API caps at a day.
const forgottenFor = 25 * time.Hour

// Forget drops what is kept for a WebhookConfig that was deleted: its
// pending deliveries, its scheduled retries (an external NATS) and its
// deliveries that failed for good (kept for replay, which needs the
// resource). Only what was stored before the call goes: a resource created
// again with the same name keeps the deliveries stored for it from then on.
// Retries waiting in the on-disk retry queue (the embedded store) are
// dropped when they fall due. Errors are logged: what is left is found
// again at the next deletion of the name, or stays until its age limit.
func (d *Dispatcher) Forget(key types.NamespacedName) {
	d.mu.Lock()
	base := d.baseCtx
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(base, forgetTimeout)
	defer cancel()
	log := d.opts.Logger.WithValues("namespace", key.Namespace, "name", key.Name)
	d.forgotten.add(key, d.opts.Now())
	for _, p := range []struct{ stream, subject string }{
		{store.StreamDeliveries, store.DeliverSubject(key.Namespace, key.Name)},
		{store.StreamDeliveries, store.RetrySubjects(key.Namespace, key.Name)},
		{store.StreamFailed, store.FailedSubject(key.Namespace, key.Name)},
		{store.StreamOrdered, store.OrderedSubjects(key.Namespace, key.Name)},
		{store.StreamOrdered, store.OrderStateSubjects(key.Namespace, key.Name)},
	} {
		if err := purgeBefore(ctx, d.js, p.stream, p.subject); err != nil {
			log.Error(err, "Removing the deliveries of a deleted WebhookConfig failed", "subject", p.subject)
		}
	}
	d.batches.forget(key)
	if d.opts.Metrics != nil {
		d.opts.Metrics.forget(key)
	}
	log.V(1).Info("Removed the deliveries kept for a deleted WebhookConfig")
}

// purgeBefore removes the messages of subject stored in stream so far.
func purgeBefore(ctx context.Context, js jetstream.JetStream, stream, subject string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs == 0 {
		return nil
	}
	// Up to, not including, the sequence after the last one stored now.
	return s.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(info.State.LastSeq+1))
}

// forgottenSet remembers deleted resources and when they were deleted.
type forgottenSet struct {
	mu sync.Mutex
	m  map[types.NamespacedName]time.Time
}

// add records that key was deleted at now, and forgets deletions older
// than forgottenFor.
func (f *forgottenSet) add(key types.NamespacedName, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[types.NamespacedName]time.Time{}
	}
	for k, at := range f.m {
		if now.Sub(at) > forgottenFor {
			delete(f.m, k)
		}
	}
	f.m[key] = now
}

// has reports whether key was deleted within forgottenFor.
func (f *forgottenSet) has(key types.NamespacedName) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[key]
	return ok
}

// stale reports whether a delivery to key accepted at acceptedAt (RFC 3339)
// was stored for a resource deleted since.
func (f *forgottenSet) stale(key types.NamespacedName, acceptedAt string) bool {
	f.mu.Lock()
	deleted, ok := f.m[key]
	f.mu.Unlock()
	if !ok {
		return false
	}
	at, err := time.Parse(time.RFC3339Nano, acceptedAt)
	return err == nil && at.Before(deleted)
}
