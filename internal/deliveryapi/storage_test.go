package deliveryapi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/store"
)

func newStorage(t *testing.T) (*Storage, *store.Store) {
	t.Helper()
	s, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir(), MaxBytes: -1, DeliveryLogRetention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return NewStorage(deliverylog.NewReader(s.JetStream())), s
}

func storeDelivery(t *testing.T, s *store.Store, webhook, id string, result webhooksv1alpha1.DeliveryResult) {
	t.Helper()
	rs := []store.LogRecord{store.StoredRecord(k8stypes.UID("uid-"+webhook), &store.Delivery{EventID: id, EventType: "message.sent", AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: []byte(`{"n":1}`)}, 1024, "")}
	if result != "" {
		rs = append(rs, store.AttemptRecord(&store.Outcome{UID: k8stypes.UID("uid-" + webhook), EventID: id, EventType: "message.sent", Attempt: 1, Attempted: true, StatusCode: 500, Result: result, Time: time.Now()}))
	}
	publishLog(t, s, webhook, rs...)
}

func publishLog(t *testing.T, s *store.Store, webhook string, rs ...store.LogRecord) {
	t.Helper()
	for _, msg := range store.DeliveryLogMsgs("shop", webhook, rs) {
		if _, err := s.JetStream().PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
}

func list(t *testing.T, st *Storage, opts *metainternalversion.ListOptions) *deliveryv1alpha1.WebhookDeliveryList {
	t.Helper()
	obj, err := st.List(genericapirequest.WithNamespace(context.Background(), "shop"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*deliveryv1alpha1.WebhookDeliveryList)
}

// TestListPagesAreASnapshot: pages of limit 2 return every delivery once,
// newest first, as of the first page's resource version, even when more
// arrive between pages.
func TestListPagesAreASnapshot(t *testing.T) {
	st, s := newStorage(t)
	for i := range 5 {
		storeDelivery(t, s, "crm", fmt.Sprintf("e%d", i), "")
	}
	var got []string
	opts := &metainternalversion.ListOptions{Limit: 2}
	for page := 0; ; page++ {
		l := list(t, st, opts)
		if page == 0 {
			storeDelivery(t, s, "crm", "late", "")
		}
		for _, d := range l.Items {
			got = append(got, d.Spec.EventID)
		}
		if l.Continue == "" {
			break
		}
		if len(l.Items) != 2 || page > 3 {
			t.Fatalf("page %d: %d items with a continue token", page, len(l.Items))
		}
		opts = &metainternalversion.ListOptions{Limit: 2, Continue: l.Continue}
	}
	if fmt.Sprint(got) != "[e4 e3 e2 e1 e0]" {
		t.Errorf("pages gave %v, want [e4 e3 e2 e1 e0]", got)
	}
	if l := list(t, st, nil); len(l.Items) != 6 || l.Items[0].Spec.EventID != "late" {
		t.Errorf("a new list: %d items, first %s", len(l.Items), l.Items[0].Spec.EventID)
	}
}

// TestSelectorsAndBadInput: field and label selectors select; an unknown
// field, a continue token not issued here and a resource version that is no
// number are 400s.
func TestSelectorsAndBadInput(t *testing.T) {
	st, s := newStorage(t)
	storeDelivery(t, s, "crm", "a", webhooksv1alpha1.ResultFailed)
	storeDelivery(t, s, "crm", "b", webhooksv1alpha1.ResultSucceeded)
	storeDelivery(t, s, "erp", "c", webhooksv1alpha1.ResultFailed)
	for sel, want := range map[string]string{
		"spec.webhook=crm":                     "[b a]",
		"spec.webhook=crm,status.state=Failed": "[a]",
		"status.state!=Failed":                 "[b]",
		"spec.eventID=c":                       "[c]",
	} {
		fs, err := fields.ParseSelector(sel)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range list(t, st, &metainternalversion.ListOptions{FieldSelector: fs}).Items {
			ids = append(ids, d.Spec.EventID)
		}
		if fmt.Sprint(ids) != want {
			t.Errorf("%s: %v, want %s", sel, ids, want)
		}
	}
	ls := labels.SelectorFromSet(labels.Set{deliveryv1alpha1.LabelState: "Failed", deliveryv1alpha1.LabelWebhook: "erp"})
	if l := list(t, st, &metainternalversion.ListOptions{LabelSelector: ls}); len(l.Items) != 1 || l.Items[0].Name != "erp.c" {
		t.Errorf("label selector: %+v", l.Items)
	}
	ctx := genericapirequest.WithNamespace(context.Background(), "shop")
	bad := []*metainternalversion.ListOptions{
		{FieldSelector: fields.OneTermEqualSelector("spec.url", "x")},
		{Continue: "not-a-token"},
	}
	for _, o := range bad {
		if _, err := st.List(ctx, o); !apierrors.IsBadRequest(err) {
			t.Errorf("List(%+v): %v, want 400", o, err)
		}
	}
	if _, err := st.Watch(ctx, &metainternalversion.ListOptions{ResourceVersion: "x"}); !apierrors.IsBadRequest(err) {
		t.Errorf("watch from resourceVersion x: %v, want 400", err)
	}
	if _, err := st.Get(ctx, "nodot", nil); !apierrors.IsBadRequest(err) {
		t.Errorf("get nodot: %v, want 400", err)
	}
	if _, err := st.Get(ctx, "crm.zz", nil); !apierrors.IsNotFound(err) {
		t.Errorf("get crm.zz: %v, want 404", err)
	}
}

// TestWatchResumesAfterItsResourceVersion: a watch from a list's resource
// version sends what changed after it (MODIFIED for an attempt on a listed
// delivery, ADDED for a new one), nothing from before, and DELETED when a
// delivery stops matching its selector.
func TestWatchResumesAfterItsResourceVersion(t *testing.T) {
	st, s := newStorage(t)
	storeDelivery(t, s, "crm", "old", "")
	l := list(t, st, nil)
	ctx := genericapirequest.WithNamespace(context.Background(), "shop")
	w, err := st.Watch(ctx, &metainternalversion.ListOptions{ResourceVersion: l.ResourceVersion,
		LabelSelector: labels.SelectorFromSet(labels.Set{deliveryv1alpha1.LabelState: "Pending"})})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	storeDelivery(t, s, "crm", "new", "")
	publishLog(t, s, "crm", store.AttemptRecord(&store.Outcome{UID: "uid-crm", EventID: "old", Attempt: 1, Attempted: true, StatusCode: 200, Result: webhooksv1alpha1.ResultSucceeded, Time: time.Now()}))
	for _, want := range []struct {
		typ watch.EventType
		id  string
	}{{watch.Added, "new"}, {watch.Deleted, "old"}} {
		select {
		case ev := <-w.ResultChan():
			d, ok := ev.Object.(*deliveryv1alpha1.WebhookDelivery)
			if !ok || ev.Type != want.typ || d.Spec.EventID != want.id {
				t.Fatalf("got %s %+v, want %s %s", ev.Type, ev.Object, want.typ, want.id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event within 10s, want %s %s", want.typ, want.id)
		}
	}
}

// TestListSince: a list with since (from ?since=) keeps the deliveries
// first accepted at or after it, in pages too.
func TestListSince(t *testing.T) {
	st, s := newStorage(t)
	for i, age := range []time.Duration{3 * time.Hour, 2 * time.Minute, 2 * time.Hour, time.Minute, 0} {
		id := fmt.Sprintf("e%d", i)
		publishLog(t, s, "crm", store.StoredRecord("uid-crm", &store.Delivery{EventID: id, EventType: "message.sent", AcceptedAt: time.Now().Add(-age).UTC().Format(time.RFC3339Nano), Body: []byte(`{}`)}, 1024, ""))
	}
	ctx := WithSince(genericapirequest.WithNamespace(context.Background(), "shop"), time.Now().Add(-time.Hour))
	var got []string
	opts := &metainternalversion.ListOptions{Limit: 2}
	for range 5 {
		obj, err := st.List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		l := obj.(*deliveryv1alpha1.WebhookDeliveryList)
		for _, d := range l.Items {
			got = append(got, d.Spec.EventID)
		}
		if l.Continue == "" {
			break
		}
		// The continue token carries since: a client that sends it only
		// with the first page gets the same pages.
		ctx = genericapirequest.WithNamespace(context.Background(), "shop")
		opts = &metainternalversion.ListOptions{Limit: 2, Continue: l.Continue}
	}
	if fmt.Sprint(got) != "[e4 e3 e1]" {
		t.Errorf("since an hour ago: %v, want [e4 e3 e1]", got)
	}
}

// TestSinceParameter: ?since= of a list, an RFC 3339 time or a duration,
// reaches List; a value that is neither is 400 with a Status naming it;
// other verbs pass untouched.
func TestSinceParameter(t *testing.T) {
	var got time.Time
	var had bool
	h := withSince(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got, had = SinceFrom(r.Context()) }))
	do := func(verb, query string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/apis/delivery.wablast.io/v1alpha1/namespaces/shop/webhookdeliveries?"+query, nil)
		req = req.WithContext(genericapirequest.WithRequestInfo(req.Context(), &genericapirequest.RequestInfo{IsResourceRequest: true, Verb: verb}))
		got, had = time.Time{}, false
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := do("list", "since=2026-12-07T10:00:00Z&limit=5"); rec.Code != http.StatusOK || !had || !got.Equal(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("RFC 3339: %d, %v %v", rec.Code, got, had)
	}
	for value, back := range map[string]time.Duration{"90m": 90 * time.Minute, "2d": 48 * time.Hour} {
		before := time.Now()
		rec := do("list", "since="+value)
		after := time.Now()
		if rec.Code != http.StatusOK || !had || got.Before(before.Add(-back)) || got.After(after.Add(-back)) {
			t.Errorf("%s: %d, %v, want %s before now", value, rec.Code, got, back)
		}
	}
	if rec := do("list", "limit=5"); rec.Code != http.StatusOK || had {
		t.Errorf("no since: %d, %v %v", rec.Code, got, had)
	}
	if rec := do("watch", "since=1h"); rec.Code != http.StatusOK || had {
		t.Errorf("a watch: %d, since %v %v", rec.Code, got, had)
	}
	for _, bad := range []string{"yesterday", "-1h", "0s"} {
		rec := do("list", "since="+bad)
		if rec.Code != http.StatusBadRequest || had || !strings.Contains(rec.Body.String(), `"kind":"Status"`) || !strings.Contains(rec.Body.String(), "since=") {
			t.Errorf("since=%s: %d %s", bad, rec.Code, rec.Body)
		}
	}
}

// TestWatchStartsWithEveryDelivery: a watch without a resource version
// first sends every delivery as ADDED, more than its channel holds, then
// what follows.
func TestWatchStartsWithEveryDelivery(t *testing.T) {
	st, s := newStorage(t)
	for i := range 250 {
		storeDelivery(t, s, "crm", fmt.Sprintf("e%d", i), "")
	}
	ctx := genericapirequest.WithNamespace(context.Background(), "shop")
	started := make(chan watch.Interface, 1)
	go func() {
		w, err := st.Watch(ctx, &metainternalversion.ListOptions{})
		if err != nil {
			t.Error(err)
		}
		started <- w
	}()
	var w watch.Interface
	select {
	case w = <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("Watch did not return within 30s")
	}
	if w == nil {
		return
	}
	defer w.Stop()
	added := map[string]bool{}
	for len(added) < 250 {
		select {
		case ev := <-w.ResultChan():
			d, ok := ev.Object.(*deliveryv1alpha1.WebhookDelivery)
			if !ok || ev.Type != watch.Added || d.Spec.Envelope != `{"n":1}` {
				t.Fatalf("got %s %+v", ev.Type, ev.Object)
			}
			added[d.Spec.EventID] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("%d ADDED within 30s, want 250", len(added))
		}
	}
	storeDelivery(t, s, "crm", "late", webhooksv1alpha1.ResultFailed)
	select {
	case ev := <-w.ResultChan():
		d, ok := ev.Object.(*deliveryv1alpha1.WebhookDelivery)
		if !ok || ev.Type != watch.Added || d.Spec.EventID != "late" || d.Status.State != deliveryv1alpha1.StateFailed || len(d.Status.Attempts) != 1 {
			t.Fatalf("got %s %+v, want ADDED late", ev.Type, ev.Object)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no event for a new delivery within 30s")
	}
}
