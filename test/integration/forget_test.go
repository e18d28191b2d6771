package integration

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// storedFor returns how many messages stream keeps on subject.
func storedFor(t *testing.T, r *running, stream, subject string) uint64 {
	t.Helper()
	st, err := r.op.Store.JetStream().Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// Deleting a WebhookConfig with kubectl-equivalent API calls removes what
// the store kept for it (pending deliveries, retries waiting on disk,
// failed deliveries kept for replay): the controller sees it gone and
// tells the dispatcher. A resource created again under the same name gets
// only what is posted from then on.
func TestDeletingAWebhookConfigRemovesItsPendingDeliveries(t *testing.T) {
	ns := env.Namespace(t)
	r := startOperator(t, ns, t.TempDir())
	ledger := testutil.NewLedger()
	down := newRecordingReceiver(t, ledger, http.StatusServiceUnavailable)
	createEndpoint(t, ns, "crm", down.URL, 10) // 1 s doubling: retries for minutes
	waitReady(t, ns, "crm")
	enqueue(t, r, ledger, ns, 0, 5)
	testutil.Eventually(t, 30*time.Second, func() error {
		if st := getWHC(t, ns, "crm").Status; st.TotalEventsSent != 5 || st.EventsPending != 5 {
			return fmt.Errorf("sent %d pending %d, want 5 retrying", st.TotalEventsSent, st.EventsPending)
		}
		return nil
	})
	subj := store.DeliverSubject(ns, "crm")
	kept := func() error {
		q := r.op.Store.Retries().Len()
		d := storedFor(t, r, store.StreamDeliveries, subj)
		f := storedFor(t, r, store.StreamFailed, store.FailedSubject(ns, "crm"))
		if q != 0 || d != 0 || f != 0 {
			return fmt.Errorf("%d retries on disk, %d deliveries pending, %d failed kept", q, d, f)
		}
		return nil
	}
	if kept() == nil {
		t.Fatal("the test needs retries waiting for crm")
	}

	if err := env.Client.Delete(context.Background(), getWHC(t, ns, "crm")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, kept)

	// Created again: nothing of the old resource's arrives, the new
	// events do, with their content.
	fresh := testutil.NewLedger()
	up := newRecordingReceiver(t, fresh, http.StatusOK)
	// The same name again, with its Secret written anew as createEndpoint does.
	if err := env.Client.Delete(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm-secret"}}); err != nil {
		t.Fatal(err)
	}
	createEndpoint(t, ns, "crm", up.URL, 3)
	waitReady(t, ns, "crm")
	enqueue(t, r, fresh, ns, 100, 2)
	testutil.Eventually(t, 30*time.Second, func() error {
		if st := getWHC(t, ns, "crm").Status; st.EventsDelivered != 2 || st.EventsPending != 0 {
			return fmt.Errorf("delivered %d pending %d, want 2 and 0", st.EventsDelivered, st.EventsPending)
		}
		return nil
	})
	if err := kept(); err != nil {
		t.Errorf("after the new resource's deliveries: %v", err)
	}
	up.checkContent(t, fresh.IDs())
}
