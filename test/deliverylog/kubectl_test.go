package deliverylog

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/operator/operatortest"
	"github.com/wablast/webhook-operator/internal/testutil"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// startOperator runs the operator for ns with the delivery log and its API
// on, routed through an APIService (operatortest.StartWithDeliveryAPI).
func startOperator(t *testing.T, ns string) *operator.Operator {
	t.Helper()
	return operatortest.StartWithDeliveryAPI(t, env, ns)
}

// receiver records what arrives and answers code, with a header and a body
// the delivery log must show.
type receiver struct {
	*httptest.Server
	code   atomic.Int32 // what it answers
	mu     sync.Mutex
	bodies map[string][]byte // by webhook-id, the last that arrived
	all    map[string][][]byte
}

func newReceiver(t *testing.T, code int) *receiver {
	rc := &receiver{bodies: map[string][]byte{}, all: map[string][][]byte{}}
	rc.code.Store(int32(code))
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		code := int(rc.code.Load())
		rc.mu.Lock()
		rc.bodies[r.Header.Get("webhook-id")] = body
		rc.all[r.Header.Get("webhook-id")] = append(rc.all[r.Header.Get("webhook-id")], body)
		rc.mu.Unlock()
		w.Header().Set("X-Receiver", "test-receiver")
		w.Header().Set("Set-Cookie", "session=must-not-be-logged")
		w.WriteHeader(code)
		_, _ = fmt.Fprintf(w, "answered %d to %s", code, r.Header.Get("webhook-id"))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) body(id string) ([]byte, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b, ok := rc.bodies[id]
	return b, ok
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
	testutil.Eventually(t, 20*time.Second, func() error {
		var w webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &w); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") {
			return errors.New("not Ready")
		}
		return nil
	})
}

// enqueue hands the events to the dispatcher as the ingestion API does and
// returns what was posted, by id.
func enqueue(t *testing.T, op *operator.Operator, ns string, ids ...string) map[string]testutil.Posted {
	t.Helper()
	now := time.Now()
	events := make([]delivery.Event, len(ids))
	posted := map[string]testutil.Posted{}
	for i, id := range ids {
		p := testutil.VariedEvent(ns, i, "message.failed")
		p.ID = id
		p.Timestamp = now.Format(time.RFC3339Nano)
		posted[id] = p
		events[i] = delivery.Event{ID: id, IdempotencyKey: true, Namespace: ns, Type: p.Type, Timestamp: now, Data: p.Data}
	}
	if _, err := op.Dispatcher.Enqueue(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	return posted
}

func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return env.Kubectl(ctx, args...)
}

// envelope is the delivered body's shape.
type envelope struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// TestKubectlGetListWatchThroughAggregation posts events to a failing and a
// succeeding endpoint and reads the delivery log back with kubectl through
// the real API server: a label-selected table, -o yaml compared with what
// was posted and what arrived, a field selector, a bad selector's 400, and a
// watch that shows a new delivery as it is made.
func TestKubectlGetListWatchThroughAggregation(t *testing.T) {
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	good := newReceiver(t, http.StatusOK)
	bad := newReceiver(t, http.StatusInternalServerError)
	createEndpoint(t, ns, "crm", good.URL+"/hooks", 3)
	createEndpoint(t, ns, "broken", bad.URL+"/hooks", 1)

	posted := enqueue(t, op, ns, "Order.1", "evt-2")
	// Wait for what the receivers saw, not for the log.
	testutil.Eventually(t, 30*time.Second, func() error {
		for id := range posted {
			if _, ok := good.body(id); !ok {
				return fmt.Errorf("crm has not received %s", id)
			}
			if _, ok := bad.body(id); !ok {
				return fmt.Errorf("broken has not received %s", id)
			}
		}
		return nil
	})

	// The table, label-selected on the state: only the failing endpoint's.
	var table string
	testutil.Eventually(t, 20*time.Second, func() error {
		out, err := kubectl(t, "get", "whd", "-n", ns, "-l", "webhooks.wablast.io/state=Failed")
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		if strings.Count(out, "broken.") != 2 {
			return fmt.Errorf("want the 2 failed deliveries of broken, got:\n%s", out)
		}
		table = out
		return nil
	})
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME WEBHOOK TYPE STATE ATTEMPTS CODE LAST ATTEMPT AGE" {
		t.Errorf("columns: %q", got)
	}
	if strings.Contains(table, "crm.") {
		t.Errorf("the Failed selection shows crm's deliveries:\n%s", table)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 8 || f[1] != "broken" || f[2] != "message.failed" || f[3] != "Failed" || f[4] != "1" || f[5] != "500" {
			t.Errorf("row %q: want broken message.failed Failed 1 500", l)
		}
	}
	// Names are reversible: "Order.1" escaped.
	wantName := deliverylog.Name("broken", "Order.1")
	if wantName != "broken._4frder_2e1" || !strings.Contains(table, wantName) {
		t.Errorf("name of broken/Order.1: %q, table:\n%s", wantName, table)
	}

	// -o yaml of one delivery: the envelope as posted, the attempt as answered.
	out, err := kubectl(t, "get", "whd", "-n", ns, wantName, "-o", "json")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got deliveryv1alpha1.WebhookDelivery
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	checkDelivery(t, &got, "broken", posted["Order.1"], bad, 500)
	yamlOut, err := kubectl(t, "get", "whd", "-n", ns, wantName, "-o", "yaml")
	if err != nil || !strings.Contains(yamlOut, "eventID: Order.1") || !strings.Contains(yamlOut, "state: Failed") {
		t.Errorf("-o yaml: %v:\n%s", err, yamlOut)
	}

	// A field selector: crm's deliveries, both Succeeded, content checked.
	out, err = kubectl(t, "get", "whd", "-n", ns, "--field-selector", "spec.webhook=crm", "-o", "json")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var list deliveryv1alpha1.WebhookDeliveryList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("spec.webhook=crm: %d items, want 2", len(list.Items))
	}
	for i := range list.Items {
		checkDelivery(t, &list.Items[i], "crm", posted[list.Items[i].Spec.EventID], good, 200)
	}
	// Newest first: evt-2 and Order.1 were enqueued together in that
	// order... the later-stored first.
	if list.Items[0].Spec.EventID == list.Items[1].Spec.EventID {
		t.Errorf("the same event twice: %+v", list.Items)
	}

	// Bad input: an unknown field is a 400 naming it.
	out, err = kubectl(t, "get", "whd", "-n", ns, "--field-selector", "spec.url=x")
	if err == nil || !strings.Contains(out, "BadRequest") || !strings.Contains(out, "spec.url") {
		t.Errorf("unknown field selector: %v: %s", err, out)
	}
	out, err = kubectl(t, "get", "whd", "-n", ns, "no-dot-here")
	if err == nil || !strings.Contains(out, "BadRequest") {
		t.Errorf("a name without an event id: %v: %s", err, out)
	}
	out, err = kubectl(t, "get", "whd", "-n", ns, "crm.not-there")
	if err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("a delivery that does not exist: %v: %s", err, out)
	}

	// A watch through the API server sees a new delivery as it happens.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", env.Kubeconfig, "get", "whd", "-n", ns,
		"--field-selector", "spec.webhook=broken", "-w", "--output-watch-events", "-o", "json")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	events := make(chan metav1.WatchEvent, 100)
	go func() {
		dec := json.NewDecoder(bufio.NewReader(stdout))
		for {
			var ev metav1.WatchEvent
			if dec.Decode(&ev) != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()
	// The list's two deliveries come first, as ADDED.
	seen := map[string]bool{}
	for len(seen) < 2 {
		ev := nextEvent(t, events)
		var o deliveryv1alpha1.WebhookDelivery
		if err := json.Unmarshal(ev.Object.Raw, &o); err != nil {
			t.Fatal(err)
		}
		seen[o.Spec.EventID] = true
	}
	more := enqueue(t, op, ns, "live-3")
	for {
		ev := nextEvent(t, events)
		var o deliveryv1alpha1.WebhookDelivery
		if err := json.Unmarshal(ev.Object.Raw, &o); err != nil {
			t.Fatal(err)
		}
		if o.Spec.EventID != "live-3" {
			t.Fatalf("watch of broken: unexpected %s %s", ev.Type, o.Name)
		}
		if o.Status.State == deliveryv1alpha1.StateFailed {
			checkDelivery(t, &o, "broken", more["live-3"], bad, 500)
			return
		}
	}
}

func nextEvent(t *testing.T, events <-chan metav1.WatchEvent) metav1.WatchEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("the watch ended")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no watch event within 30s")
	}
	return metav1.WatchEvent{}
}

// checkDelivery compares a WebhookDelivery with what was posted and what
// the receiver got and answered.
func checkDelivery(t *testing.T, o *deliveryv1alpha1.WebhookDelivery, webhook string, p testutil.Posted, rc *receiver, code int32) {
	t.Helper()
	if o.Spec.Webhook != webhook || o.Spec.EventID != p.ID || o.Spec.Type != p.Type {
		t.Errorf("%s: spec %s/%s/%s, want %s/%s/%s", o.Name, o.Spec.Webhook, o.Spec.EventID, o.Spec.Type, webhook, p.ID, p.Type)
	}
	if o.Name != deliverylog.Name(webhook, p.ID) {
		t.Errorf("name %q, want %q", o.Name, deliverylog.Name(webhook, p.ID))
	}
	if o.Labels[deliveryv1alpha1.LabelWebhook] != webhook || o.Labels[deliveryv1alpha1.LabelEventType] != p.Type || o.Labels[deliveryv1alpha1.LabelState] != string(o.Status.State) {
		t.Errorf("%s: labels %v", o.Name, o.Labels)
	}
	arrived, ok := rc.body(p.ID)
	if !ok {
		t.Fatalf("%s never arrived at %s", p.ID, webhook)
	}
	if o.Spec.Envelope != string(arrived) {
		t.Errorf("%s: envelope in the log differs from what arrived:\nlog:     %s\narrived: %s", o.Name, rawOf(o), arrived)
	}
	var env envelope
	if err := json.Unmarshal(arrived, &env); err != nil {
		t.Fatal(err)
	}
	if env.Type != p.Type || !jsonEqual(env.Data, p.Data) {
		t.Errorf("%s: delivered %s %s, posted %s %s", o.Name, env.Type, env.Data, p.Type, p.Data)
	}
	if int(o.Spec.EnvelopeBytes) != len(arrived) || len(o.Spec.EnvelopeSHA256) != 64 {
		t.Errorf("%s: envelopeBytes %d (arrived %d), sha %q", o.Name, o.Spec.EnvelopeBytes, len(arrived), o.Spec.EnvelopeSHA256)
	}
	if len(o.Status.Attempts) != 1 {
		t.Fatalf("%s: %d attempts, want 1: %+v", o.Name, len(o.Status.Attempts), o.Status.Attempts)
	}
	a := o.Status.Attempts[0]
	wantBody := fmt.Sprintf("answered %d to %s", code, p.ID)
	if a.Attempt != 1 || !a.Attempted || a.StatusCode != code || a.ResponseBody != wantBody || a.ResponseHeaders["X-Receiver"] != "test-receiver" {
		t.Errorf("%s: attempt %+v, want #1 answered %d %q with X-Receiver", o.Name, a, code, wantBody)
	}
	if _, ok := a.ResponseHeaders["Set-Cookie"]; ok {
		t.Errorf("%s: Set-Cookie kept in the log", o.Name)
	}
	host := strings.TrimPrefix(rc.URL, "http://")
	if a.Host != host {
		t.Errorf("%s: host %q, want %q", o.Name, a.Host, host)
	}
	want := deliveryv1alpha1.StateSucceeded
	if code >= 300 {
		want = deliveryv1alpha1.StateFailed
		if a.Error == "" || a.Result != "Failed" {
			t.Errorf("%s: failed attempt without error or result: %+v", o.Name, a)
		}
	}
	if o.Status.State != want {
		t.Errorf("%s: state %s, want %s", o.Name, o.Status.State, want)
	}
}

func rawOf(o *deliveryv1alpha1.WebhookDelivery) string {
	if o.Spec.Envelope == "" {
		return "<none>"
	}
	return o.Spec.Envelope
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
