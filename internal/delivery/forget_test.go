package delivery

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/retryqueue"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// subjectMsgs returns how many messages of stream are on subject.
func subjectMsgs(t *testing.T, s *store.Store, stream, subject string) uint64 {
	t.Helper()
	st, err := s.JetStream().Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// A deleted WebhookConfig's pending deliveries, failed deliveries and
// waiting retries are removed; another endpoint's stay, and a resource
// created again with the same name gets only what is posted from then on.
func TestForgetRemovesWhatWasKeptForADeletedWebhookConfig(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer hang.Close()
	defer close(release)
	h := newHarness(t, "", nil)
	one := func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 1 }
	crm := testEndpoint("crm", hang.URL, one)
	other := testEndpoint("other", hang.URL, one)
	h.reg.Upsert(crm)
	h.reg.Upsert(other)
	for i := range 5 {
		h.enqueue(testEvent(i + 1))
	}
	crmSubj, otherSubj := store.DeliverSubject("shop", "crm"), store.DeliverSubject("shop", "other")
	// A failed delivery kept for replay, and a retry waiting on disk.
	failed := store.DeliveryMsg("shop", "crm", crm.UID, &store.Delivery{EventID: "msg_000040", EventType: "message.sent", AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: []byte(`{}`)})
	failed.Subject = store.FailedSubject("shop", "crm")
	if _, err := h.store.JetStream().PublishMsg(t.Context(), failed); err != nil {
		t.Fatal(err)
	}
	if subjectMsgs(t, h.store, store.StreamDeliveries, crmSubj) == 0 || subjectMsgs(t, h.store, store.StreamFailed, failed.Subject) != 1 {
		t.Fatal("the test needs crm's deliveries pending and one failed")
	}
	otherBefore := subjectMsgs(t, h.store, store.StreamDeliveries, otherSubj)
	stale := testEvent(50)
	body, _ := stale.Envelope()
	staleAt := time.Now().UTC()

	// The controller saw the resource deleted.
	h.reg.Remove(crm.Key())
	h.d.Forget(crm.Key())

	if n := subjectMsgs(t, h.store, store.StreamDeliveries, crmSubj); n != 0 {
		t.Errorf("%d messages of the deleted resource are still pending", n)
	}
	if n := subjectMsgs(t, h.store, store.StreamFailed, failed.Subject); n != 0 {
		t.Errorf("%d failed deliveries of the deleted resource are still kept", n)
	}
	if n := subjectMsgs(t, h.store, store.StreamDeliveries, otherSubj); n != otherBefore {
		t.Errorf("the other endpoint's pending messages went from %d to %d", otherBefore, n)
	}

	// A retry of the deleted resource's, accepted before it was deleted,
	// falls due: it is dropped, not moved into the name's subject, where
	// nothing would ever take it.
	q := h.store.Retries()
	if err := q.Put(retryqueue.Entry{Part: retryPart(crm.UID), Due: time.Now(), ID: "stale",
		Data: store.EncodeRetry("shop", "crm", crm.UID, &store.Delivery{EventID: stale.ID, EventType: stale.Type, AcceptedAt: staleAt.Add(-time.Second).Format(time.RFC3339Nano), Body: body, Attempt: 1})}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := q.Len(); n != 0 {
			return fmt.Errorf("%d retries wait", n)
		}
		return nil
	})
	if n := subjectMsgs(t, h.store, store.StreamDeliveries, crmSubj); n != 0 {
		t.Errorf("a retry of the deleted resource was moved into its subject (%d messages)", n)
	}

	// Created again: a new UID, a receiver that checks what arrives.
	rc := newReceiver(t, nil)
	again := testEndpoint("crm", rc.URL, func(e *endpoint.Endpoint) { e.UID = "uid-crm-2" })
	h.reg.Upsert(again)
	fresh := []Event{testEvent(101), testEvent(102)}
	h.enqueue(fresh...)
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := len(rc.uniqueIDs()); n < 2 {
			return fmt.Errorf("%d of 2 delivered", n)
		}
		return nil
	})
	rc.checkAll(t, fresh...)
	if got := rc.uniqueIDs(); len(got) != 2 {
		t.Errorf("the resource created again received %v, want only %s and %s", got, fresh[0].ID, fresh[1].ID)
	}
}
