package deliverylog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

// modelDelivery is what the test wrote of one delivery.
type modelDelivery struct {
	webhook, id, body string
	attempts          int
	state             deliveryv1alpha1.DeliveryState
}

func (m modelDelivery) String() string {
	return fmt.Sprintf("%s/%s %s×%d %s", m.webhook, m.id, m.state, m.attempts, m.body)
}

func seen(d *Delivery) string {
	o := d.Object
	return modelDelivery{o.Spec.Webhook, o.Spec.EventID, o.Spec.Envelope, len(o.Status.Attempts), o.Status.State}.String()
}

// writeModel writes n random operations to the log of namespace ns: new
// deliveries (a quarter of them to "crm", the rest to "erp") and attempts
// on any delivery written before, old or new, so that deliveries' records
// spread over the log. It returns the deliveries in the order they were
// first stored.
func writeModel(t *testing.T, s *store.Store, ns string, n int, rng *rand.Rand, into []*modelDelivery) []*modelDelivery {
	t.Helper()
	results := []webhooksv1alpha1.DeliveryResult{webhooksv1alpha1.ResultRetrying, webhooksv1alpha1.ResultSucceeded, webhooksv1alpha1.ResultFailed}
	for range n {
		if len(into) < 20 || rng.IntN(3) == 0 {
			webhook := "erp"
			if rng.IntN(4) == 0 {
				webhook = "crm"
			}
			i := len(into)
			m := &modelDelivery{webhook: webhook, id: fmt.Sprintf("Evt.%d", i), body: fmt.Sprintf(`{"n":%d}`, i), state: deliveryv1alpha1.StatePending}
			write(t, s, ns, webhook, store.StoredRecord(types.UID("uid-"+webhook), &store.Delivery{
				EventID: m.id, EventType: "message.sent", AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: []byte(m.body),
			}, 64, ""))
			into = append(into, m)
			continue
		}
		m := into[rng.IntN(len(into))]
		res := results[rng.IntN(len(results))]
		m.attempts++
		m.state = deliveryv1alpha1.DeliveryState(res)
		write(t, s, ns, m.webhook, store.AttemptRecord(&store.Outcome{
			UID: types.UID("uid-" + m.webhook), EventID: m.id, EventType: "message.sent", Attempt: int32(m.attempts),
			Attempted: true, StatusCode: 500, Result: res, Time: time.Now().UTC(),
		}))
	}
	return into
}

func snapshot(ms []*modelDelivery) []modelDelivery {
	out := make([]modelDelivery, len(ms))
	for i, m := range ms {
		out[i] = *m
	}
	return out
}

// newestFirst is what a list of ms selected by keep must return.
func newestFirst(ms []modelDelivery, keep func(modelDelivery) bool) []string {
	var out []string
	for _, m := range slices.Backward(ms) {
		if keep(m) {
			out = append(out, m.String())
		}
	}
	return out
}

// pages lists q page by page, as a continued list does, and returns every
// item in order.
func pages(t *testing.T, r *Reader, q Query) []string {
	t.Helper()
	var got []string
	for range 1000 {
		ds, more, err := r.Page(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if q.Limit > 0 && len(ds) > q.Limit {
			t.Fatalf("a page of %d with limit %d", len(ds), q.Limit)
		}
		for _, d := range ds {
			got = append(got, seen(d))
		}
		if !more {
			return got
		}
		if len(ds) == 0 {
			t.Fatal("an empty page says there are more")
		}
		q.Below = ds[len(ds)-1].FirstSeq
	}
	t.Fatal("more than 1000 pages")
	return nil
}

// TestPagesAreTheNewestFirstListAsOfTheirVersion: paged with a small
// limit, one WebhookConfig's deliveries and the namespace's come out
// newest first (by when each was first stored), each once, with every
// attempt up to the list's resource version and none after it, and the
// same as a read of everything; whatever the deliveries' records are
// spread over (attempts on old deliveries long after they were stored).
func TestPagesAreTheNewestFirstListAsOfTheirVersion(t *testing.T) {
	s := openStore(t, 0)
	r := NewReader(s.JetStream())
	rng := rand.New(rand.NewPCG(18, 1))
	ms := writeModel(t, s, "ns", 1500, rng, nil)
	write(t, s, "other", "crm", stored("uid-crm", "elsewhere", `{}`))
	first, upTo, err := r.Bounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot(ms)
	// Written after the list's resource version: not in its pages.
	writeModel(t, s, "ns", 300, rng, ms)

	one := slices.IndexFunc(ms, func(m *modelDelivery) bool { return m.webhook == "erp" })
	all := func(modelDelivery) bool { return true }
	crm := func(m modelDelivery) bool { return m.webhook == "crm" }
	failed := func(m modelDelivery) bool { return m.state == deliveryv1alpha1.StateFailed }
	for _, tc := range []struct {
		name  string
		q     Query
		model func(modelDelivery) bool
	}{
		{"crm in pages of 7", Query{Webhook: "crm", Limit: 7}, crm},
		{"crm at once", Query{Webhook: "crm"}, crm},
		{"the namespace in pages of 50", Query{Limit: 50}, all},
		{"the failed in pages of 9", Query{Limit: 9, Match: func(d *Delivery) bool { return d.Object.Status.State == deliveryv1alpha1.StateFailed }}, failed},
		{"one event", Query{Webhook: "erp", EventID: ms[one].id}, func(m modelDelivery) bool { return m.id == ms[one].id }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := tc.q
			q.Namespace, q.First, q.UpTo = "ns", first, upTo
			got := pages(t, r, q)
			exp := newestFirst(want, tc.model)
			if len(exp) == 0 {
				t.Fatal("the model selects nothing: a weak test")
			}
			if !slices.Equal(got, exp) {
				t.Errorf("got %d deliveries, want %d", len(got), len(exp))
				for i := range max(len(got), len(exp)) {
					var g, w string
					if i < len(got) {
						g = got[i]
					}
					if i < len(exp) {
						w = exp[i]
					}
					if g != w {
						t.Errorf("first difference at %d: got %q, want %q", i, g, w)
						break
					}
				}
			}
		})
	}
}

// TestAPageReadsAboutWhatItReturns: the first page of 10 of one
// WebhookConfig, and a get of one delivery, read a small part of a long
// log, not all of it.
func TestAPageReadsAboutWhatItReturns(t *testing.T) {
	s := openStore(t, 0)
	r := NewReader(s.JetStream())
	// 4,000 deliveries of erp, then 20 of crm among 400 more of erp, each
	// with an attempt.
	var last uint64
	for i := range 4420 {
		webhook, id := "erp", fmt.Sprintf("e%d", i)
		if i >= 4000 && i%21 == 0 {
			webhook = "crm"
		}
		last = write(t, s, "ns", webhook, stored(types.UID("uid-"+webhook), id, `{}`),
			attempt(types.UID("uid-"+webhook), id, 1, webhooksv1alpha1.ResultSucceeded, 200, time.Time{}))
	}
	first, _, err := r.Bounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before := r.reads.Load()
	ds, more, err := r.Page(context.Background(), Query{Namespace: "ns", Webhook: "crm", First: first, UpTo: last, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	reads := r.reads.Load() - before
	t.Logf("the page read %d messages of a log of %d", reads, last)
	if len(ds) != 10 || !more || ds[0].Object.Spec.EventID != "e4410" || ds[9].Object.Spec.EventID != "e4221" {
		t.Fatalf("page: %d items (more %v), first %v", len(ds), more, ds)
	}
	for _, d := range ds {
		if d.Object.Spec.Webhook != "crm" || d.Object.Status.State != deliveryv1alpha1.StateSucceeded || len(d.Object.Status.Attempts) != 1 {
			t.Errorf("%s: %+v", d.Object.Name, d.Object)
		}
	}
	// 10 deliveries (and the 11th, which says there are more): their
	// records and a look-up of each one's first record.
	if reads > 40 {
		t.Errorf("the page read %d messages of a log of %d (want at most 40)", reads, last)
	}

	before = r.reads.Load()
	d, err := r.Get(context.Background(), "ns", "erp", "e17", last)
	if err != nil || d == nil || d.Object.Name != "erp.e17" || d.Object.Spec.Envelope != `{}` || len(d.Object.Status.Attempts) != 1 {
		t.Fatalf("get erp.e17: %+v, %v", d, err)
	}
	if reads := r.reads.Load() - before; reads > 2 {
		t.Errorf("a get read %d messages (want its 1 and the end of the batch)", reads)
	}
	if d, err := r.Get(context.Background(), "ns", "erp", "nope", last); err != nil || d != nil {
		t.Errorf("get of a delivery the log does not hold: %+v, %v", d, err)
	}
}

// TestSinceKeepsTheDeliveriesAcceptedSince: Since keeps the deliveries
// first accepted at or after it (their creationTimestamp), newest first.
func TestSinceKeepsTheDeliveriesAcceptedSince(t *testing.T) {
	s := openStore(t, 0)
	r := NewReader(s.JetStream())
	now := time.Now().UTC()
	var last uint64
	for i := range 30 {
		at := now.Add(-3 * time.Hour)
		if i%3 == 0 {
			at = now.Add(-time.Duration(i) * time.Minute)
		}
		last = write(t, s, "ns", "crm", store.StoredRecord("u1", &store.Delivery{EventID: fmt.Sprintf("e%d", i), EventType: "message.sent", AcceptedAt: at.Format(time.RFC3339Nano), Body: []byte(`{}`)}, 64, ""))
	}
	first, _, _ := r.Bounds(context.Background())
	got := pages(t, r, Query{Namespace: "ns", Webhook: "crm", First: first, UpTo: last, Limit: 4, Since: now.Add(-time.Hour)})
	var ids []string
	for _, g := range got {
		ids = append(ids, strings.Fields(g)[0])
	}
	if want := "[crm/e27 crm/e24 crm/e21 crm/e18 crm/e15 crm/e12 crm/e9 crm/e6 crm/e3 crm/e0]"; fmt.Sprint(ids) != want {
		t.Errorf("since an hour ago: %v, want %s", ids, want)
	}
}
