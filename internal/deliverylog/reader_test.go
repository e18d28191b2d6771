package deliverylog

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

func openStore(t *testing.T, maxBytes int64) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{
		DataDir: t.TempDir(), MaxBytes: -1, DeliveryLogRetention: time.Hour, DeliveryLogMaxBytes: maxBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func write(t *testing.T, s *store.Store, ns, name string, rs ...store.LogRecord) uint64 {
	t.Helper()
	msgs := store.DeliveryLogMsgs(ns, name, rs)
	var seq uint64
	for _, msg := range msgs {
		ack, err := s.JetStream().PublishMsg(context.Background(), msg)
		if err != nil {
			t.Fatal(err)
		}
		seq = ack.Sequence
	}
	return seq
}

func stored(uid types.UID, id, body string) store.LogRecord {
	return store.StoredRecord(uid, &store.Delivery{EventID: id, EventType: "message.sent", AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: []byte(body)}, 64, "")
}

func attempt(uid types.UID, id string, n int32, result webhooksv1alpha1.DeliveryResult, code int32, next time.Time) store.LogRecord {
	return store.AttemptRecord(&store.Outcome{
		UID: uid, EventID: id, EventType: "message.sent", Attempt: n, Attempted: true, StatusCode: code,
		Result: result, Time: time.Now().UTC(), NextAttempt: next, Host: "crm.example.com",
		ResponseHeaders: map[string]string{"X-A": "b"}, ResponseBody: "nope",
	})
}

// TestFoldFollowsADeliveryThroughItsLife: Stored is Pending, a failed
// attempt with a next one Retrying, a success Succeeded, a resend Pending
// again with the attempts kept; a body over the cap keeps its size and
// hash only; a WebhookConfig made anew starts its deliveries over.
func TestFoldFollowsADeliveryThroughItsLife(t *testing.T) {
	s := openStore(t, 0)
	r := NewReader(s.JetStream())
	ctx := context.Background()
	next := time.Now().Add(time.Minute).UTC().Truncate(time.Second)
	big := `{"type":"message.sent","data":{"x":"` + strings.Repeat("a", 100) + `"}}`
	steps := []struct {
		records []store.LogRecord
		state   deliveryv1alpha1.DeliveryState
		tries   int
	}{
		{[]store.LogRecord{stored("u1", "e1", `{"a":1}`), stored("u1", "e2", big)}, deliveryv1alpha1.StatePending, 0},
		{[]store.LogRecord{attempt("u1", "e1", 1, webhooksv1alpha1.ResultRetrying, 503, next)}, deliveryv1alpha1.StateRetrying, 1},
		{[]store.LogRecord{attempt("u1", "e1", 2, webhooksv1alpha1.ResultSucceeded, 204, time.Time{})}, deliveryv1alpha1.StateSucceeded, 2},
		{[]store.LogRecord{store.StoredRecord("u1", &store.Delivery{EventID: "e1", EventType: "message.sent", AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: []byte(`{"a":1}`)}, 64, "Resend")}, deliveryv1alpha1.StatePending, 2},
	}
	var last uint64
	for i, st := range steps {
		last = write(t, s, "ns", "crm", st.records...)
		ds, _, err := r.Scan(ctx, "ns", "", last)
		if err != nil {
			t.Fatal(err)
		}
		var e1 *deliveryv1alpha1.WebhookDelivery
		for _, d := range ds {
			if d.Object.Spec.EventID == "e1" {
				e1 = d.Object
			}
		}
		if e1 == nil || e1.Status.State != st.state || len(e1.Status.Attempts) != st.tries {
			t.Fatalf("step %d: e1 = %+v, want %s with %d attempts", i, e1, st.state, st.tries)
		}
		wantRV := last
		if i == 0 {
			wantRV-- // e1's message is the first of the two (one message a delivery)
		}
		if e1.ResourceVersion != fmt.Sprint(wantRV) || e1.Name != "crm.e1" || e1.Labels[deliveryv1alpha1.LabelState] != string(st.state) {
			t.Errorf("step %d: rv %s name %s labels %v", i, e1.ResourceVersion, e1.Name, e1.Labels)
		}
		if st.state == deliveryv1alpha1.StateRetrying && (e1.Status.NextAttemptAt == nil || !e1.Status.NextAttemptAt.Time.Equal(next)) {
			t.Errorf("step %d: nextAttemptAt %v, want %v", i, e1.Status.NextAttemptAt, next)
		}
		if e1.Spec.Envelope != `{"a":1}` {
			t.Errorf("step %d: envelope %s", i, e1.Spec.Envelope)
		}
	}
	ds, _, err := r.Scan(ctx, "ns", "crm", last)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Object.Spec.EventID != "e2" {
		t.Fatalf("want e2 then e1 (newest first by their first record), got %d", len(ds))
	}
	e2 := ds[0].Object.Spec
	if e2.Envelope != "" || e2.EnvelopeBytes != int64(len(big)) || len(e2.EnvelopeSHA256) != 64 {
		t.Errorf("a body over the cap: envelope %v, %d bytes, sha %q", e2.Envelope, e2.EnvelopeBytes, e2.EnvelopeSHA256)
	}
	a := ds[1].Object.Status.Attempts[0]
	if a.Host != "crm.example.com" || a.StatusCode != http.StatusServiceUnavailable || a.ResponseBody != "nope" || a.ResponseHeaders["X-A"] != "b" {
		t.Errorf("attempt: %+v", a)
	}

	// The WebhookConfig deleted and made again (a new UID): e1 starts over.
	last = write(t, s, "ns", "crm", stored("u2", "e1", `{"b":2}`))
	ds, _, err = r.Scan(ctx, "ns", "crm", last)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Object.Spec.EventID == "e1" && (d.Object.Spec.WebhookUID != "u2" || len(d.Object.Status.Attempts) != 0 || d.Object.Spec.Envelope != `{"b":2}`) {
			t.Errorf("e1 of the new crm: %+v", d.Object)
		}
	}
	// Other namespaces and WebhookConfigs are not read.
	write(t, s, "other", "crm", stored("u3", "e9", `{}`))
	last = write(t, s, "ns", "erp", stored("u4", "e8", `{}`))
	ds, _, err = r.Scan(ctx, "ns", "crm", last)
	if err != nil || len(ds) != 2 {
		t.Fatalf("ns/crm: %d deliveries, %v", len(ds), err)
	}
	ds, _, err = r.Scan(ctx, "ns", "", last)
	if err != nil || len(ds) != 3 {
		t.Fatalf("ns: %d deliveries, %v", len(ds), err)
	}
}

// TestAStoredRecordAfterItsAttemptsChangesNoState: an accepted event's
// Stored record that comes after the delivery's attempts (it waited for a
// first attempt that another replica made) fills the envelope in and
// leaves the state; the same event accepted again after its attempts (its
// id forgotten) is Pending again.
func TestAStoredRecordAfterItsAttemptsChangesNoState(t *testing.T) {
	s := openStore(t, 0)
	r := NewReader(s.JetStream())
	ctx := context.Background()
	accepted := time.Now().Add(-time.Second).UTC()
	late := store.StoredRecord("u1", &store.Delivery{EventID: "e1", EventType: "message.sent", AcceptedAt: accepted.Format(time.RFC3339Nano), Body: []byte(`{"a":1}`)}, 64, "")
	write(t, s, "ns", "crm", attempt("u1", "e1", 1, webhooksv1alpha1.ResultSucceeded, 204, time.Time{}))
	last := write(t, s, "ns", "crm", late)
	d, err := r.Get(ctx, "ns", "crm", "e1", last)
	if err != nil {
		t.Fatal(err)
	}
	if o := d.Object; o.Status.State != deliveryv1alpha1.StateSucceeded || o.Spec.Envelope != `{"a":1}` || len(o.Status.Attempts) != 1 || o.Labels[deliveryv1alpha1.LabelState] != "Succeeded" {
		t.Fatalf("a late Stored record: state %s, envelope %q, %d attempts", o.Status.State, o.Spec.Envelope, len(o.Status.Attempts))
	}
	again := store.StoredRecord("u1", &store.Delivery{EventID: "e1", EventType: "message.sent", AcceptedAt: time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano), Body: []byte(`{"a":1}`)}, 64, "")
	last = write(t, s, "ns", "crm", again)
	if d, err = r.Get(ctx, "ns", "crm", "e1", last); err != nil {
		t.Fatal(err)
	}
	if d.Object.Status.State != deliveryv1alpha1.StatePending {
		t.Fatalf("the event accepted again after its attempts: state %s, want Pending", d.Object.Status.State)
	}
}

// TestFollowSeesNewRecords: a follower started after a sequence is told of
// each later record's delivery, created or changed, and of nothing before.
func TestFollowSeesNewRecords(t *testing.T) {
	s := openStore(t, 0)
	r := NewReader(s.JetStream())
	seq := write(t, s, "ns", "crm", stored("u1", "old", `{}`))
	_, f, err := r.Scan(context.Background(), "ns", "", seq)
	if err != nil {
		t.Fatal(err)
	}
	type change struct {
		id      string
		created bool
		state   deliveryv1alpha1.DeliveryState
	}
	got := make(chan change, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.Follow(ctx, "ns", "", seq, f, nil, func(d *Delivery, created bool) {
			got <- change{d.Object.Spec.EventID, created, d.Object.Status.State}
		})
	}()
	write(t, s, "ns", "crm", attempt("u1", "old", 1, webhooksv1alpha1.ResultFailed, 500, time.Time{}))
	write(t, s, "other", "crm", stored("u1", "elsewhere", `{}`))
	write(t, s, "ns", "crm", stored("u1", "new", `{}`))
	want := []change{{"old", false, deliveryv1alpha1.StateFailed}, {"new", true, deliveryv1alpha1.StatePending}}
	for _, w := range want {
		select {
		case c := <-got:
			if c != w {
				t.Errorf("got %+v, want %+v", c, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no change within 10s, want %+v", w)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLogKeepsItsSizeCap: past --delivery-log-max-bytes the oldest records
// go first, and reads start where the log now starts.
func TestLogKeepsItsSizeCap(t *testing.T) {
	s := openStore(t, 64<<10)
	r := NewReader(s.JetStream())
	body := `{"pad":"` + strings.Repeat("x", 900) + `"}`
	var last uint64
	for i := range 200 {
		last = write(t, s, "ns", "crm", store.StoredRecord("u1", &store.Delivery{EventID: fmt.Sprintf("e%d", i), EventType: "message.sent", AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: []byte(body)}, 4096, ""))
	}
	first, _, err := r.Bounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first <= 1 {
		t.Fatalf("200 records of 1 KiB in a 64 KiB log: it still starts at %d", first)
	}
	ds, _, err := r.Scan(context.Background(), "ns", "", last)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) == 0 || len(ds) >= 200 || ds[0].Object.Spec.EventID != "e199" {
		t.Fatalf("kept %d deliveries, newest %v", len(ds), ds)
	}
	for _, d := range ds {
		if d.FirstSeq < first {
			t.Errorf("%s from sequence %d, before the log's start %d", d.Object.Name, d.FirstSeq, first)
		}
	}
}
