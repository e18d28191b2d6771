package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/deliveryapi"
	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/store"
)

// logTimings is how many times each read is timed; the median is reported.
const logTimings = 21

// measureDeliveryLog fills the delivery log with LogDeliveries deliveries
// of LogWebhooks WebhookConfigs of one namespace, each a Stored record and,
// a few deliveries later, an Attempt record (two messages, as the delivery
// path writes them, through the same encoding), and times reads through
// the delivery API's REST storage (what the API server calls for kubectl
// get whd): a page of 100 of one webhook, by label and by field selector,
// its next page, a get of one delivery, and a page of 100 of the whole
// namespace. Every page is checked: the webhook's newest deliveries, newest
// first, each with its body and attempt as written.
func measureDeliveryLog(ctx context.Context, sz sizes) *result {
	res := &result{}
	tmp, err := os.MkdirTemp("", "wablast-bench-deliverylog-")
	if err != nil {
		return res.fail(err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best effort: a temporary directory
	st, err := store.Open(ctx, store.Options{DataDir: tmp, MaxBytes: -1, DeliveryLogRetention: 72 * time.Hour, DeliveryLogMaxBytes: 8 << 30, DeliveryLogMaxRecords: -1})
	if err != nil {
		return res.fail(err)
	}
	defer st.Close()
	js := st.JetStream()

	const ns, lag = "bench", 7
	n, hooks := sz.LogDeliveries, max(sz.LogWebhooks, 1)
	webhookOf := func(i int) string { return "crm-" + strconv.Itoa(i%hooks) }
	idOf := func(i int) string { return fmt.Sprintf("evt_%08d", i) }
	bodyOf := func(i int) []byte {
		return fmt.Appendf(nil, `{"type":"message.delivered","timestamp":"2026-12-07T10:00:00Z","data":{"messageId":"wamid.%08d","sessionId":"s-1","to":"+6281234567890","status":"delivered"}}`, i)
	}
	uidOf := func(w string) types.UID { return types.UID("uid-" + w) }
	t0 := time.Now()
	publish := func(w string, r store.LogRecord) error {
		for _, m := range store.DeliveryLogMsgs(ns, w, []store.LogRecord{r}) {
			if _, err := js.PublishMsgAsync(m); err != nil {
				return err
			}
		}
		return nil
	}
	attempt := func(i int) error {
		w := webhookOf(i)
		return publish(w, store.AttemptRecord(&store.Outcome{
			Namespace: ns, Name: w, UID: uidOf(w), EventID: idOf(i), EventType: "message.delivered", Attempt: 1, Attempted: true,
			Time: time.Now().UTC(), DurationMS: 12, Host: "crm.example.com", StatusCode: 200, Result: webhooksv1alpha1.ResultSucceeded,
			ResponseHeaders: map[string]string{"Content-Type": "text/plain"}, ResponseBody: "ok",
		}))
	}
	for i := range n {
		if ctx.Err() != nil {
			return res.fail(ctx.Err())
		}
		w := webhookOf(i)
		d := store.Delivery{EventID: idOf(i), EventType: "message.delivered", AcceptedAt: time.Now().UTC().Format(time.RFC3339Nano), Body: bodyOf(i)}
		if err := publish(w, store.StoredRecord(uidOf(w), &d, store.DefaultDeliveryLogBodyBytes, "")); err != nil {
			return res.fail(err)
		}
		if i >= lag {
			if err := attempt(i - lag); err != nil {
				return res.fail(err)
			}
		}
		// Within the store's bound on unacknowledged asynchronous
		// publishes (4,096), as the delivery path stays.
		if i%1000 == 999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				return res.fail(fmt.Errorf("the log's writes were not acknowledged within a minute"))
			}
		}
	}
	for i := max(n-lag, 0); i < n; i++ {
		if err := attempt(i); err != nil {
			return res.fail(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return res.fail(fmt.Errorf("the log's writes were not acknowledged within a minute"))
	}
	wrote := time.Since(t0)
	// The embedded server keeps an index entry a subject (a delivery) in
	// memory: the heap after the writes, collected, is mostly that.
	runtime.GC()
	var mem runtime.MemStats
	runtime.ReadMemStats(&mem)
	reader := deliverylog.NewReader(js)
	first, last, err := reader.Bounds(ctx)
	if err != nil {
		return res.fail(err)
	}
	if want := uint64(2 * n); first != 1 || last != want {
		return res.fail(fmt.Errorf("the log holds sequences %d to %d, want 1 to %d: not everything was kept", first, last, want))
	}
	storage := deliveryapi.NewStorage(reader)
	rctx := genericapirequest.WithNamespace(ctx, ns)

	// The webhook whose deliveries are listed, and what its page must be.
	w := webhookOf(42 % hooks)
	var want []int
	for i := n - 1; i >= 0 && len(want) < 200; i-- {
		if webhookOf(i) == w {
			want = append(want, i)
		}
	}
	check := func(what string, l *deliveryv1alpha1.WebhookDeliveryList, idx []int, webhook string) error {
		if len(l.Items) != len(idx) {
			return fmt.Errorf("%s: %d items, want %d", what, len(l.Items), len(idx))
		}
		for k, i := range idx {
			d := &l.Items[k]
			if webhook != "" && d.Spec.Webhook != webhook || d.Spec.EventID != idOf(i) || d.Spec.Envelope != string(bodyOf(i)) ||
				d.Status.State != deliveryv1alpha1.StateSucceeded || len(d.Status.Attempts) != 1 || d.Status.Attempts[0].StatusCode != http.StatusOK {
				return fmt.Errorf("%s: item %d is %s/%s %s with %d attempts and envelope %q; want %s/%s Succeeded with its attempt and body",
					what, k, d.Spec.Webhook, d.Spec.EventID, d.Status.State, len(d.Status.Attempts), d.Spec.Envelope, webhookOf(i), idOf(i))
			}
		}
		return nil
	}
	timeIt := func(what string, f func() error) (time.Duration, error) {
		ds := make([]time.Duration, 0, logTimings)
		for range logTimings {
			start := time.Now()
			if err := f(); err != nil {
				return 0, fmt.Errorf("%s: %w", what, err)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		return ds[len(ds)/2], nil
	}
	list := func(opts *metainternalversion.ListOptions) (*deliveryv1alpha1.WebhookDeliveryList, error) {
		obj, err := storage.List(rctx, opts)
		if err != nil {
			return nil, err
		}
		return obj.(*deliveryv1alpha1.WebhookDeliveryList), nil
	}
	byLabel := &metainternalversion.ListOptions{Limit: 100, LabelSelector: labels.SelectorFromSet(labels.Set{deliveryv1alpha1.LabelWebhook: w})}
	var cont string
	labelPage, err := timeIt("a page of one webhook by label", func() error {
		l, err := list(byLabel)
		if err != nil {
			return err
		}
		cont = l.Continue
		if l.Continue == "" {
			return fmt.Errorf("a page of 100 of %d has no continue token", n/hooks)
		}
		return check("the first page", l, want[:100], w)
	})
	if err != nil {
		return res.fail(err)
	}
	fieldPage, err := timeIt("a page of one webhook by field", func() error {
		l, err := list(&metainternalversion.ListOptions{Limit: 100, FieldSelector: fields.OneTermEqualSelector("spec.webhook", w)})
		if err != nil {
			return err
		}
		return check("the first page by field", l, want[:100], w)
	})
	if err != nil {
		return res.fail(err)
	}
	nextPage, err := timeIt("the next page", func() error {
		l, err := list(&metainternalversion.ListOptions{Limit: 100, LabelSelector: byLabel.LabelSelector, Continue: cont})
		if err != nil {
			return err
		}
		return check("the second page", l, want[100:200], w)
	})
	if err != nil {
		return res.fail(err)
	}
	one := want[57]
	get, err := timeIt("a get", func() error {
		obj, err := storage.Get(rctx, deliverylog.Name(w, idOf(one)), nil)
		if err != nil {
			return err
		}
		return check("the get", &deliveryv1alpha1.WebhookDeliveryList{Items: []deliveryv1alpha1.WebhookDelivery{*obj.(*deliveryv1alpha1.WebhookDelivery)}}, []int{one}, w)
	})
	if err != nil {
		return res.fail(err)
	}
	var newest []int
	for i := n - 1; i >= 0 && len(newest) < 100; i-- {
		newest = append(newest, i)
	}
	nsPage, err := timeIt("a page of the namespace", func() error {
		l, err := list(&metainternalversion.ListOptions{Limit: 100})
		if err != nil {
			return err
		}
		return check("the namespace's page", l, newest, "")
	})
	if err != nil {
		return res.fail(err)
	}

	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	res.add(fmt.Sprintf("10. list of 100 deliveries of one webhook (label selector) out of %d kept", n), ms(labelPage), "< 100 ms", labelPage < 100*time.Millisecond)
	res.info("10. the same by field selector spec.webhook", ms(fieldPage))
	res.info("10. its next page (continue)", ms(nextPage))
	res.info("10. get of one delivery", ms(get))
	res.info("10. list of the namespace's newest 100 (every delivery of the log selected)", ms(nsPage))
	res.info("10. writing the log (in-process, asynchronous publishes)", fmt.Sprintf("%s for %d messages", wrote.Round(100*time.Millisecond), 2*n))
	res.info(fmt.Sprintf("10. heap in use with the log of %d deliveries open (the store's subject index)", n), fmt.Sprintf("%.0f MiB", float64(mem.HeapInuse)/(1<<20)))
	res.notef("The log: the embedded store (file storage) holding %d deliveries of %d WebhookConfigs in one namespace (%d each), every one a Stored record with its %d-byte body and, %d deliveries later, an Attempt record: %d messages, written in-process through the log's encoding (store.DeliveryLogMsgs), as the delivery path writes them.", n, hooks, n/hooks, len(bodyOf(0)), lag, 2*n)
	res.notef("Each read goes through the delivery API's REST storage (deliveryapi.Storage, what the API server calls for kubectl get whd), %d times; the median is reported. Every answer is checked: the webhook's newest deliveries, newest first, each with its body and attempt as written. The aggregation layer's proxy and the HTTP and JSON encoding of the answer are not timed.", logTimings)
	return res
}
