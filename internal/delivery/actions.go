package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
)

// TestRequest asks for one webhook.test delivery to an endpoint.
type TestRequest struct {
	Namespace, Name string
	UID             types.UID
	// Token is the test-requested-at annotation value, echoed in status.lastTest.
	Token string
	// Endpoint is the resolved endpoint, disabled or not; nil when the
	// resource is not Ready, in which case NotReady says why.
	Endpoint *endpoint.Endpoint
	NotReady string
}

// ReplayRequest asks for the deliveries of an endpoint that failed for good
// since a time to be queued again.
type ReplayRequest struct {
	Namespace, Name string
	UID             types.UID
	// Token is the replay-since annotation value, echoed in status.lastReplay.
	Token string
	// Since is Token parsed; zero when Token is not an RFC 3339 time.
	Since time.Time
}

// claim records that the action kind/uid/token is being handled and reports
// whether it was new. Each resource remembers its last token per kind.
func (d *Dispatcher) claim(kind string, uid types.UID, token string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := kind + "/" + string(uid)
	if d.handled[key] == token {
		return false
	}
	d.handled[key] = token
	return true
}

// RequestTest sends one webhook.test event to the endpoint in the background
// (one attempt, no retries, whether the endpoint is enabled or subscribed or
// not) and records the outcome in status.lastTest and a Kubernetes Event.
// A token already handled is ignored.
func (d *Dispatcher) RequestTest(req TestRequest) {
	if !d.claim("test", req.UID, req.Token) {
		return
	}
	go d.runTest(req)
}

func (d *Dispatcher) runTest(req TestRequest) {
	ctx := d.context()
	rec := webhooksv1alpha1.TestRecord{RequestedAt: req.Token, Result: webhooksv1alpha1.ResultFailed}
	if req.Endpoint == nil {
		rec.Error = "not sent: the WebhookConfig is not Ready: " + req.NotReady
	} else {
		ep := req.Endpoint
		ev := Event{
			ID:        "msg_test_" + store.HashString(string(req.UID)+"/"+req.Token),
			Namespace: req.Namespace,
			Type:      string(webhooksv1alpha1.EventWebhookTest),
			Timestamp: d.opts.Now(),
		}
		var body []byte
		data, err := TestEventData(req.Namespace, req.Name, req.Token)
		if err == nil {
			ev.Data = data
			body, err = ev.Envelope()
		}
		if err != nil {
			rec.Error = err.Error()
		} else {
			res := d.sender.send(ctx, ep, ev.ID, body)
			rec.StatusCode = int32(res.statusCode)
			rec.DurationMilliseconds = res.duration.Milliseconds()
			if res.succeeded() {
				rec.Result = webhooksv1alpha1.ResultSucceeded
			} else {
				rec.Error = res.errorText(ep.Policy.Timeout)
			}
			if d.opts.Metrics != nil {
				d.opts.Metrics.attempt(ep, ev.Type, &res)
			}
		}
	}
	now := metav1.NewTime(d.opts.Now().UTC())
	rec.Time = &now
	if err := d.reporter().LastTest(ctx, req.Namespace, req.Name, req.UID, &rec); err != nil {
		d.opts.Logger.Error(err, "Recording a test delivery failed", "namespace", req.Namespace, "name", req.Name)
		d.forget("test", req.UID, req.Token)
		return
	}
	reason, eventType := "TestDeliverySucceeded", corev1.EventTypeNormal
	msg := fmt.Sprintf("Test delivery %s answered %d in %dms", req.Token, rec.StatusCode, rec.DurationMilliseconds)
	if rec.Result != webhooksv1alpha1.ResultSucceeded {
		reason, eventType = "TestDeliveryFailed", corev1.EventTypeWarning
		msg = fmt.Sprintf("Test delivery %s failed: %s", req.Token, rec.Error)
	}
	d.reporter().Event(req.Namespace, req.Name, req.UID, eventType, reason, "TestDelivery", msg)
}

// TestMessage is data.message of every webhook.test event, as
// docs/events.md (from the catalog's example) shows it.
const TestMessage = "This is a test delivery from the WA Blast webhook operator."

// TestEventData is the data of the webhook.test event sent for the
// test-requested-at token of WebhookConfig ns/name: the fields of the
// catalog's webhook.test schema, all of them.
func TestEventData(ns, name, token string) ([]byte, error) {
	return json.Marshal(map[string]string{
		"message":       TestMessage,
		"webhookConfig": name,
		"namespace":     ns,
		"requestedAt":   token,
	})
}

// RequestReplay queues again, in the background, every delivery of the
// endpoint that failed for good since req.Since, with its original
// webhook-id, and records how many in status.lastReplay. A token already
// handled is ignored.
func (d *Dispatcher) RequestReplay(req ReplayRequest) {
	if !d.claim("replay", req.UID, req.Token) {
		return
	}
	go d.runReplay(req)
}

func (d *Dispatcher) runReplay(req ReplayRequest) {
	ctx := d.context()
	var n int64
	var err error
	if req.Since.IsZero() {
		err = fmt.Errorf("annotation %s=%q is not an RFC 3339 time", webhooksv1alpha1.AnnotationReplaySince, req.Token)
	} else {
		n, err = d.replay(ctx, req)
		d.want(types.NamespacedName{Namespace: req.Namespace, Name: req.Name})
	}
	if err != nil {
		d.opts.Logger.Error(err, "Replay failed", "namespace", req.Namespace, "name", req.Name)
		d.reporter().Event(req.Namespace, req.Name, req.UID, corev1.EventTypeWarning, "ReplayFailed", "Replay", "Replay "+req.Token+" failed: "+err.Error())
		if req.Since.IsZero() {
			// Record the bad value so it is not tried again; nothing was requeued.
			now := metav1.NewTime(d.opts.Now().UTC())
			_ = d.reporter().LastReplay(ctx, req.Namespace, req.Name, req.UID, &webhooksv1alpha1.ReplayRecord{RequestedAt: req.Token, Time: &now})
			return
		}
		d.forget("replay", req.UID, req.Token)
		return
	}
	now := metav1.NewTime(d.opts.Now().UTC())
	if err := d.reporter().LastReplay(ctx, req.Namespace, req.Name, req.UID, &webhooksv1alpha1.ReplayRecord{RequestedAt: req.Token, Time: &now, EventsRequeued: n}); err != nil {
		d.opts.Logger.Error(err, "Recording a replay failed", "namespace", req.Namespace, "name", req.Name)
		return
	}
	d.reporter().Event(req.Namespace, req.Name, req.UID, corev1.EventTypeNormal, "Replayed", "Replay",
		fmt.Sprintf("Requeued %d events that failed since %s", n, req.Since.UTC().Format(time.RFC3339)))
}

// replay reads the endpoint's failed deliveries since req.Since and moves
// each event back into its delivery subject, once, with its original
// webhook-id: it publishes the delivery, then deletes the failed copies of
// the event it read. So an event stays in the failed store only while it
// is failed: a later replay of the same window does not send again what a
// replay delivered (an event that fails again is stored again, and is
// replayed again). The delivery carries the time of the failure it
// replaces, so the stats count the event once, by its final outcome. The
// message IDs make a replay that is run again after a crash requeue nothing
// twice within the deliveries stream's duplicate window; replays run one at
// a time.
func (d *Dispatcher) replay(ctx context.Context, req ReplayRequest) (int64, error) {
	d.replayMu.Lock()
	defer d.replayMu.Unlock()
	subject := store.FailedSubject(req.Namespace, req.Name)
	stream, err := d.js.Stream(ctx, store.StreamFailed)
	if err != nil {
		return 0, err
	}
	// The replay covers the failures stored before it started: a replayed
	// event that fails again while it runs is stored again, and is left
	// for the next replay.
	lastMsg, err := stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		return 0, err
	}
	end := lastMsg.Sequence
	since := req.Since
	cons, err := d.js.OrderedConsumer(ctx, store.StreamFailed, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	var n int64
	now := d.opts.Now().UTC().Format(time.RFC3339Nano)
	replayID := store.HashString(string(req.UID) + "/" + req.Token)
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return n, err
		}
		got := 0
		var last uint64 = 1
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			last = meta.NumPending
			if meta.Sequence.Stream > end {
				return n, nil
			}
			h := m.Headers()
			if h.Get(store.HdrEndpointUID) != string(req.UID) {
				continue // an earlier resource of the same name
			}
			id := h.Get(store.HdrEventID)
			if !seen[id] {
				// A replay starts a new life: maxAgeSeconds counts from now.
				dl := &store.Delivery{EventID: id, EventType: h.Get(store.HdrEventType), AcceptedAt: now, ReplacesFailure: h.Get(store.HdrFailedAt), Body: m.Data()}
				msg := store.DeliveryMsg(req.Namespace, req.Name, req.UID, dl)
				d.dlog.stored(req.Namespace, req.Name, req.UID, []store.Delivery{*dl}, "Replay")
				if _, err := d.js.PublishMsg(ctx, msg, jetstream.WithMsgID("replay."+replayID+"."+strconv.FormatUint(meta.Sequence.Stream, 10))); err != nil {
					return n, err
				}
				seen[id] = true
				n++
			}
			// The event is queued again: this copy (or a duplicate of it,
			// stored twice after a crash) no longer stands for a failure.
			if err := stream.DeleteMsg(ctx, meta.Sequence.Stream); err != nil {
				// Gone already (aged out, or removed with its resource) is fine.
				if _, gerr := stream.GetMsg(ctx, meta.Sequence.Stream); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
					return n, fmt.Errorf("removing a replayed event from the failed store: %w", err)
				}
			}
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
			return n, batch.Error()
		}
		if got == 0 || last == 0 {
			return n, nil
		}
	}
}

func (d *Dispatcher) context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.baseCtx
}

func (d *Dispatcher) forget(kind string, uid types.UID, token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if key := kind + "/" + string(uid); d.handled[key] == token {
		delete(d.handled, key)
	}
}

// Reporter records the results of test deliveries and replays:
// status.lastTest, status.lastReplay and Kubernetes Events. In the manager
// it is a status.Reporter, which writes them to the API server.
type Reporter interface {
	LastTest(ctx context.Context, ns, name string, uid types.UID, rec *webhooksv1alpha1.TestRecord) error
	LastReplay(ctx context.Context, ns, name string, uid types.UID, rec *webhooksv1alpha1.ReplayRecord) error
	Event(ns, name string, uid types.UID, eventType, reason, action, msg string)
}

// reporter is the options' Reporter, or one that reports nothing.
func (d *Dispatcher) reporter() Reporter {
	if d.opts.Reporter == nil {
		return noReporter{}
	}
	return d.opts.Reporter
}

type noReporter struct{}

var errNoReporter = errors.New("no status reporter configured")

func (noReporter) LastTest(context.Context, string, string, types.UID, *webhooksv1alpha1.TestRecord) error {
	return errNoReporter
}

func (noReporter) LastReplay(context.Context, string, string, types.UID, *webhooksv1alpha1.ReplayRecord) error {
	return errNoReporter
}

func (noReporter) Event(string, string, types.UID, string, string, string, string) {}
