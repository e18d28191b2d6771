package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/testutil"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// verifyingReceiver counts requests whose signature verifies (with the
// official library, through the content oracle, which also checks every
// body against its ledger), and answers code.
type verifyingReceiver struct {
	*httptest.Server
	oracle  *testutil.Receiver
	ok, bad atomic.Int64
	code    atomic.Int32
}

func newVerifyingReceiver(t *testing.T, ledger *testutil.Ledger, code int) *verifyingReceiver {
	oracle, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	rc := &verifyingReceiver{oracle: oracle}
	rc.code.Store(int32(code))
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			_, err = oracle.Record(r.Header, r.URL.Path, body)
		}
		if err != nil {
			rc.bad.Add(1)
		} else {
			rc.ok.Add(1)
		}
		w.WriteHeader(int(rc.code.Load()))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func createEndpoint(t *testing.T, ns, name, url string, maxAttempts int32) {
	t.Helper()
	ctx := context.Background()
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-secret"}, StringData: map[string]string{"secret": secret}}
	whc := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:       url,
			SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: name + "-secret"},
			Events:    []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
			Delivery:  &webhooksv1alpha1.DeliveryPolicy{MaxAttempts: maxAttempts, InitialBackoffSeconds: 1},
		},
	}
	for _, o := range []client.Object{sec, whc} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

func getWHC(t *testing.T, ns, name string) *webhooksv1alpha1.WebhookConfig {
	t.Helper()
	var w webhooksv1alpha1.WebhookConfig
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &w); err != nil {
		t.Fatal(err)
	}
	return &w
}

func waitReady(t *testing.T, ns, name string) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		if !meta.IsStatusConditionTrue(getWHC(t, ns, name).Status.Conditions, "Ready") {
			return errors.New("not Ready")
		}
		return nil
	})
}

// enqueue hands events msg_<from>..msg_<from+n-1> of type
// message.delivered, each with data of its own, to the dispatcher directly
// (as the ingestion API does after validating), and records them in ledger.
func enqueue(t *testing.T, r *running, ledger *testutil.Ledger, ns string, from, n int) {
	t.Helper()
	events := make([]delivery.Event, n)
	posted := make([]testutil.Posted, n)
	now := time.Now()
	for i := range events {
		p := testutil.VariedEvent(ns, from+i, "message.delivered")
		p.ID = fmt.Sprintf("msg_%d", from+i)
		p.Timestamp = now.Format(time.RFC3339Nano)
		posted[i] = p
		events[i] = delivery.Event{
			ID: p.ID, IdempotencyKey: true, Namespace: ns, Type: p.Type,
			Timestamp: now, Data: p.Data,
		}
	}
	ledger.Add(posted...)
	if _, err := r.op.Dispatcher.Enqueue(context.Background(), events); err != nil {
		t.Fatal(err)
	}
}

func TestStatusReflectsDeliveries(t *testing.T) {
	ns := env.Namespace(t)
	dataDir := t.TempDir()
	start := time.Now()
	r := startOperator(t, ns, dataDir)
	ledger := testutil.NewLedger()
	good := newVerifyingReceiver(t, ledger, http.StatusOK)
	broken := newVerifyingReceiver(t, ledger, http.StatusInternalServerError)
	createEndpoint(t, ns, "crm", good.URL+"/hooks", 3)
	createEndpoint(t, ns, "broken", broken.URL+"/hooks", 1)
	waitReady(t, ns, "crm")
	waitReady(t, ns, "broken")

	const n = 50
	enqueue(t, r, ledger, ns, 0, n)

	testutil.Eventually(t, 30*time.Second, func() error {
		w := getWHC(t, ns, "crm")
		st := w.Status
		if st.TotalEventsSent != n || st.EventsDelivered != n {
			return fmt.Errorf("crm: sent %d delivered %d", st.TotalEventsSent, st.EventsDelivered)
		}
		return nil
	})
	w := getWHC(t, ns, "crm")
	if got := good.ok.Load(); got != n || good.bad.Load() != 0 {
		t.Errorf("receiver verified %d (bad %d), status says %d", got, good.bad.Load(), w.Status.EventsDelivered)
	}
	if w.Status.SuccessRate != "100.0%" || w.Status.EventsFailed != 0 || w.Status.EventsPending != 0 {
		t.Errorf("crm status %+v", w.Status)
	}
	if ld := w.Status.LastDelivery; ld == nil || ld.Result != webhooksv1alpha1.ResultSucceeded || ld.StatusCode != http.StatusOK || ld.Attempt != 1 || ld.EventType != "message.delivered" {
		t.Errorf("lastDelivery %+v", w.Status.LastDelivery)
	}
	if len(w.Status.RecentDeliveries) != 10 {
		t.Errorf("%d recent deliveries, want 10", len(w.Status.RecentDeliveries))
	}
	if !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") || !meta.IsStatusConditionTrue(w.Status.Conditions, "Delivering") || !w.Status.Active {
		t.Errorf("conditions %+v active %v: the controller's and the dispatcher's fields must coexist", w.Status.Conditions, w.Status.Active)
	}

	testutil.Eventually(t, 30*time.Second, func() error {
		st := getWHC(t, ns, "broken").Status
		if st.EventsFailed != n {
			return fmt.Errorf("broken: failed %d", st.EventsFailed)
		}
		return nil
	})
	b := getWHC(t, ns, "broken").Status
	d := meta.FindStatusCondition(b.Conditions, "Delivering")
	if err := broken.oracle.CheckAll(ledger.IDs()); err != nil {
		t.Errorf("broken: content: %v", err)
	}
	if b.SuccessRate != "0.0%" || b.ConsecutiveFailures != n || d == nil || d.Status != metav1.ConditionFalse || d.Reason != webhooksv1alpha1.ReasonDeliveryFailing {
		t.Errorf("broken status %+v", b)
	}
	if !strings.Contains(b.LastDelivery.Error, "500") {
		t.Errorf("lastDelivery error %q does not give the status code", b.LastDelivery.Error)
	}

	// Batching: at most one write per flush interval (1s here) per resource.
	bound := int(time.Since(start)/time.Second) + 2
	if got := r.writes.MaxPerResource(); got > bound || got == 0 {
		t.Errorf("%d status writes for one resource in %s, bound %d", got, time.Since(start).Round(time.Second), bound)
	}
	// Nothing changes: nothing is written, through three whole flushes.
	before, flushes := r.writes.Total(), r.op.StatusWriter.Flushes()
	testutil.Eventually(t, 30*time.Second, func() error {
		if f := r.op.StatusWriter.Flushes(); f < flushes+3 {
			return fmt.Errorf("%d flushes since, want 3", f-flushes)
		}
		return nil
	})
	if after := r.writes.Total(); after != before {
		t.Errorf("%d status writes while nothing changed", after-before)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.Kubectl(ctx, "get", "whc", "crm", "-n", ns)
	if err != nil {
		t.Fatal(err, out)
	}
	if row := strings.Fields(strings.Split(out, "\n")[1]); row[3] != "True" || row[4] != "100.0%" || row[5] != "50" {
		t.Errorf("kubectl get whc row %q, want DELIVERING True, SUCCESS RATE 100.0%%, SENT 50", row)
	}

	// Counters survive a restart on the same data directory, and go on.
	r.stop()
	r2 := startOperator(t, ns, dataDir)
	enqueue(t, r2, ledger, ns, n, 10)
	testutil.Eventually(t, 30*time.Second, func() error {
		st := getWHC(t, ns, "crm").Status
		if st.TotalEventsSent != n+10 || st.EventsDelivered != n+10 {
			return fmt.Errorf("after restart: sent %d delivered %d", st.TotalEventsSent, st.EventsDelivered)
		}
		return nil
	})
	if err := good.oracle.CheckAll(ledger.IDs()); err != nil {
		t.Errorf("crm: content: %v", err)
	}
}

// Before its first delivery a resource's SUCCESS RATE is "-" (the contract's
// "none finished"), not blank, in status and in kubectl's columns, which are
// the contract's: NAME, ACTIVE, READY, DELIVERING, SUCCESS RATE, SENT, LAST
// DELIVERY, AGE.
func TestSuccessRateIsADashBeforeTheFirstDelivery(t *testing.T) {
	ns := env.Namespace(t)
	startOperator(t, ns, t.TempDir())
	createEndpoint(t, ns, "quiet", "http://127.0.0.1:1/hooks", 1)
	waitReady(t, ns, "quiet")
	if rate := getWHC(t, ns, "quiet").Status.SuccessRate; rate != "-" {
		t.Errorf("status.successRate %q before any delivery, want -", rate)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.Kubectl(ctx, "get", "whc", "quiet", "-n", ns)
	if err != nil {
		t.Fatal(err, out)
	}
	lines := strings.Split(out, "\n")
	if header := strings.Join(strings.Fields(lines[0]), " "); header != "NAME ACTIVE READY DELIVERING SUCCESS RATE SENT LAST DELIVERY AGE" {
		t.Errorf("kubectl get whc columns %q", header)
	}
	// DELIVERING is empty until a delivery was made; SUCCESS RATE is "-" and SENT 0.
	if got := columns(lines[0], lines[1]); got["NAME"] != "quiet" || got["DELIVERING"] != "" || got["SUCCESS RATE"] != "-" || got["SENT"] != "0" {
		t.Errorf("kubectl get whc row %q", got)
	}
}

// columns splits a row of kubectl's table output at the header's column
// starts and returns each cell, trimmed, by column name.
func columns(header, row string) map[string]string {
	names := []string{"NAME", "ACTIVE", "READY", "DELIVERING", "SUCCESS RATE", "SENT", "LAST DELIVERY", "AGE"}
	out := map[string]string{}
	for i, name := range names {
		start := strings.Index(header, name)
		if start < 0 || start > len(row) {
			continue
		}
		end := len(row)
		if i+1 < len(names) {
			if next := strings.Index(header, names[i+1]); next >= 0 && next < end {
				end = next
			}
		}
		out[name] = strings.TrimSpace(row[start:end])
	}
	return out
}
