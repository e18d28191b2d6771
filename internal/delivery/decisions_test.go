package delivery

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
)

// The retry decision, every branch, without NATS or HTTP.
func TestDecide(t *testing.T) {
	accepted := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	p := endpoint.Policy{Timeout: 2 * time.Second, MaxAttempts: 3, InitialBackoff: 10 * time.Second, MaxBackoff: time.Minute, MaxAge: time.Hour}
	half := func() float64 { return 0.5 }
	refused := &EgressRefusedError{}
	cases := []struct {
		name     string
		attempt  int
		now      time.Time
		res      attemptResult
		verdict  verdict
		reason   string
		errHas   string
		retryAt  time.Time
		policyFn func(*endpoint.Policy)
	}{
		{name: "2xx is done", attempt: 1, now: accepted, res: attemptResult{statusCode: 204}, verdict: verdictSucceeded, reason: webhooksv1alpha1.ReasonDeliverySucceeded},
		{name: "410 holds the endpoint", attempt: 1, now: accepted, res: attemptResult{statusCode: 410}, verdict: verdictGone, reason: webhooksv1alpha1.ReasonEndpointGone, errHas: "410 Gone"},
		{name: "5xx retries after the jittered backoff", attempt: 1, now: accepted, res: attemptResult{statusCode: 503}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonDeliveryFailing, errHas: "503", retryAt: accepted.Add(7500 * time.Millisecond)},
		{name: "the second retry waits twice as long", attempt: 2, now: accepted, res: attemptResult{statusCode: 500}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonDeliveryFailing, retryAt: accepted.Add(15 * time.Second)},
		{name: "Retry-After is honoured", attempt: 1, now: accepted, res: attemptResult{statusCode: 429, retryAfter: "30"}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonDeliveryFailing, retryAt: accepted.Add(30 * time.Second)},
		{name: "Retry-After is capped at maxBackoff", attempt: 1, now: accepted, res: attemptResult{statusCode: 429, retryAfter: "3600"}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonDeliveryFailing, retryAt: accepted.Add(time.Minute)},
		{name: "the last attempt gives up", attempt: 3, now: accepted, res: attemptResult{statusCode: 500}, verdict: verdictGiveUp, reason: webhooksv1alpha1.ReasonDeliveryFailing, errHas: "gave up after 3 attempts"},
		{name: "a retry after maxAge gives up", attempt: 1, now: accepted.Add(time.Hour - time.Second), res: attemptResult{statusCode: 500}, verdict: verdictGiveUp, reason: webhooksv1alpha1.ReasonDeliveryFailing, errHas: "after maxAgeSeconds"},
		{name: "a timeout says so", attempt: 1, now: accepted, res: attemptResult{err: context.DeadlineExceeded}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonDeliveryFailing, errHas: "no response within timeoutSeconds (2s)", retryAt: accepted.Add(7500 * time.Millisecond)},
		{name: "an egress refusal has its own reason", attempt: 1, now: accepted, res: attemptResult{err: refused, refused: true}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonEgressRefused, retryAt: accepted.Add(7500 * time.Millisecond)},
		{name: "a redirect is a failure", attempt: 1, now: accepted, res: attemptResult{statusCode: 302}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonDeliveryFailing, errHas: "redirects are not followed", retryAt: accepted.Add(7500 * time.Millisecond)},
		{name: "a connection error is a failure", attempt: 1, now: accepted, res: attemptResult{err: errors.New("connection refused")}, verdict: verdictRetry, reason: webhooksv1alpha1.ReasonDeliveryFailing, errHas: "request failed: connection refused", retryAt: accepted.Add(7500 * time.Millisecond)},
		{name: "maxAttempts 1 never retries", attempt: 1, now: accepted, res: attemptResult{statusCode: 500}, verdict: verdictGiveUp, reason: webhooksv1alpha1.ReasonDeliveryFailing, errHas: "gave up after 1 attempts", policyFn: func(p *endpoint.Policy) { p.MaxAttempts = 1 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pol := p
			if c.policyFn != nil {
				c.policyFn(&pol)
			}
			got := decide(pol, c.attempt, accepted, c.now, &c.res, half)
			if got.verdict != c.verdict || got.reason != c.reason {
				t.Fatalf("decide = verdict %d reason %q, want %d %q", got.verdict, got.reason, c.verdict, c.reason)
			}
			if !strings.Contains(got.errText, c.errHas) {
				t.Errorf("error text %q does not say %q", got.errText, c.errHas)
			}
			if c.verdict == verdictSucceeded && got.errText != "" {
				t.Errorf("a success carries error text %q", got.errText)
			}
			if !got.retryAt.Equal(c.retryAt) && (!c.retryAt.IsZero() || c.verdict == verdictRetry) {
				t.Errorf("retry at %v, want %v", got.retryAt, c.retryAt)
			}
			if c.verdict != verdictRetry && !got.retryAt.IsZero() {
				t.Errorf("verdict %d carries a retry time %v", got.verdict, got.retryAt)
			}
		})
	}
}

func TestExpiredBeforeAttempt(t *testing.T) {
	accepted := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	p := endpoint.Policy{MaxAge: time.Hour}
	if _, expired := expiredBeforeAttempt(p, accepted, accepted.Add(time.Hour)); expired {
		t.Error("an event exactly maxAge old is given up; it still has its attempt")
	}
	dec, expired := expiredBeforeAttempt(p, accepted, accepted.Add(time.Hour+time.Nanosecond))
	if !expired || dec.verdict != verdictGiveUp || !strings.Contains(dec.errText, "older than maxAgeSeconds (1h0m0s)") {
		t.Errorf("an event older than maxAge: %v %+v", expired, dec)
	}
}

// planSync's rules, one case each.
func TestPlanSync(t *testing.T) {
	ep := func(name string, mutate ...func(*endpoint.Endpoint)) endpoint.Endpoint {
		return testEndpoint(name, "http://127.0.0.1:1", mutate...)
	}
	key := func(name string) types.NamespacedName { return types.NamespacedName{Namespace: "shop", Name: name} }
	running := func(e endpoint.Endpoint, stopped, idle bool) workerState {
		return workerState{ep: &e, stopped: stopped, idle: idle}
	}
	never := func(types.UID, int64) bool { return false }
	type want struct{ stop, update, start []string }
	cases := []struct {
		name    string
		eps     []endpoint.Endpoint
		running map[types.NamespacedName]workerState
		wanted  []string
		held    func(types.UID, int64) bool
		want    want
	}{
		{name: "nothing stored, nothing running: nothing to do", eps: []endpoint.Endpoint{ep("a")}},
		{name: "deliveries stored: the worker starts", eps: []endpoint.Endpoint{ep("a")}, wanted: []string{"a"}, want: want{start: []string{"a"}}},
		{name: "a busy worker takes the new configuration", eps: []endpoint.Endpoint{ep("a", func(e *endpoint.Endpoint) { e.URL = "http://127.0.0.1:2" })},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, false)}, want: want{update: []string{"a"}}},
		{name: "an idle worker stops", eps: []endpoint.Endpoint{ep("a")},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, true)}, want: want{stop: []string{"a"}}},
		{name: "an idle worker with new deliveries keeps going", eps: []endpoint.Endpoint{ep("a")}, wanted: []string{"a"},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, true)}, want: want{update: []string{"a"}}},
		{name: "a new maxInFlight restarts the worker at once", eps: []endpoint.Endpoint{ep("a", func(e *endpoint.Endpoint) { e.Policy.MaxInFlight = 9 })},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, true)}, want: want{stop: []string{"a"}, start: []string{"a"}}},
		{name: "a new timeout restarts the worker", eps: []endpoint.Endpoint{ep("a", func(e *endpoint.Endpoint) { e.Policy.Timeout = time.Minute })},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, false)}, want: want{stop: []string{"a"}, start: []string{"a"}}},
		{name: "a recreated resource (new UID) restarts the worker", eps: []endpoint.Endpoint{ep("a", func(e *endpoint.Endpoint) { e.UID = "uid-a-2" })},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, false)}, want: want{stop: []string{"a"}, start: []string{"a"}}},
		{name: "a worker whose consumption ended is replaced", eps: []endpoint.Endpoint{ep("a")},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), true, false)}, want: want{stop: []string{"a"}, start: []string{"a"}}},
		{name: "an endpoint no longer registered loses its worker", eps: []endpoint.Endpoint{ep("b")}, wanted: []string{"a"},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, false)}, want: want{stop: []string{"a"}}},
		{name: "a 410 holds the endpoint: no worker, stored deliveries or not", eps: []endpoint.Endpoint{ep("a"), ep("b")}, wanted: []string{"a", "b"},
			running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, false)},
			held:    func(uid types.UID, _ int64) bool { return uid == "uid-a" }, want: want{stop: []string{"a"}, start: []string{"b"}}},
		{name: "a paused endpoint: its worker stops, none starts for its stored deliveries",
			eps:    []endpoint.Endpoint{ep("a", func(e *endpoint.Endpoint) { e.Paused = true }), ep("b", func(e *endpoint.Endpoint) { e.Paused = true }), ep("c")},
			wanted: []string{"a", "b", "c"}, running: map[types.NamespacedName]workerState{key("a"): running(ep("a"), false, false)},
			want: want{stop: []string{"a"}, start: []string{"c"}}},
		{name: "unpaused with deliveries stored: the worker starts", eps: []endpoint.Endpoint{ep("a")}, wanted: []string{"a"},
			want: want{start: []string{"a"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wanted := map[types.NamespacedName]time.Time{}
			for _, n := range c.wanted {
				wanted[key(n)] = time.Time{}
			}
			held := c.held
			if held == nil {
				held = never
			}
			p := planSync(c.eps, c.running, wanted, held, true)
			var got want
			for _, k := range p.stop {
				got.stop = append(got.stop, k.Name)
			}
			for _, e := range p.update {
				got.update = append(got.update, e.Name)
			}
			for _, e := range p.start {
				got.start = append(got.start, e.Name)
			}
			for _, pair := range [][2][]string{{got.stop, c.want.stop}, {got.update, c.want.update}, {got.start, c.want.start}} {
				slices.Sort(pair[0])
				if !slices.Equal(pair[0], pair[1]) {
					t.Errorf("plan stop %v update %v start %v, want %+v", got.stop, got.update, got.start, c.want)
					break
				}
			}
			for _, e := range append(p.update, p.start...) {
				if !slices.ContainsFunc(c.eps, func(r endpoint.Endpoint) bool { return r.UID == e.UID && r.URL == e.URL && r.Policy == e.Policy }) {
					t.Errorf("plan carries %s/%s with a configuration that is not the registered one", e.Namespace, e.Name)
				}
			}
		})
	}
}

// subscribersAmong answers, as Registry.Subscribers does, the endpoints of
// eps in a namespace subscribed to a type.
func subscribersAmong(eps ...endpoint.Endpoint) func(ns, typ string) []endpoint.Endpoint {
	return func(ns, typ string) []endpoint.Endpoint {
		var out []endpoint.Endpoint
		for _, e := range eps {
			if e.Namespace == ns && e.Subscribes(typ) {
				out = append(out, e)
			}
		}
		return out
	}
}

// planEnqueue with an external NATS: events with an id go to the events
// stream; the others become deliveries grouped by endpoint, in event order,
// each carrying its own event's body.
func TestPlanEnqueue(t *testing.T) {
	a := testEndpoint("a", "http://127.0.0.1:1", func(e *endpoint.Endpoint) { e.Events = []string{"message.sent"} })
	b := testEndpoint("b", "http://127.0.0.1:1")
	subscribers := subscribersAmong(a, b)
	events := []Event{testEvent(1), testEvent(2), testEvent(3), testEvent(4)}
	events[1].IdempotencyKey = true
	events[2].Type = "session.connected"
	events[3].Namespace = "other"
	p, err := planEnqueue(events, "2026-12-07T10:00:00Z", subscribers, idPlan{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.recorded) != 0 {
		t.Errorf("ids to record %v, want none (the events stream keeps them)", p.recorded)
	}
	if len(p.withID) != 1 || p.withID[0].index != 1 {
		t.Fatalf("events with an id: %+v, want event 1 only", p.withID)
	}
	if body, _ := events[1].Envelope(); !bytes.Equal(p.withID[0].body, body) {
		t.Errorf("event 1 is written with body %s, want %s", p.withID[0].body, body)
	}
	wantSubs := []int{2, 0, 1, 0} // event 1's subscribers are counted when the stream answers
	for i, r := range p.results {
		if r.ID != events[i].ID || r.Subscribers != wantSubs[i] {
			t.Errorf("result %d = %+v, want id %s, %d subscribers", i, r, events[i].ID, wantSubs[i])
		}
	}
	got := map[string][]string{}
	for _, g := range p.direct {
		for _, dl := range g.ds {
			got[g.ep.Name] = append(got[g.ep.Name], dl.EventID)
			var ev *Event
			for i := range events {
				if events[i].ID == dl.EventID {
					ev = &events[i]
				}
			}
			body, _ := ev.Envelope()
			if !bytes.Equal(dl.Body, body) || dl.EventType != ev.Type || dl.AcceptedAt != "2026-12-07T10:00:00Z" {
				t.Errorf("delivery of %s to %s carries %s %s %s, want its own event's", dl.EventID, g.ep.Name, dl.EventType, dl.AcceptedAt, dl.Body)
			}
		}
	}
	if !slices.Equal(got["a"], []string{events[0].ID}) || !slices.Equal(got["b"], []string{events[0].ID, events[2].ID}) || len(got) != 2 {
		t.Errorf("deliveries by endpoint %v, want a: [%s], b: [%s %s]", got, events[0].ID, events[0].ID, events[2].ID)
	}
}

// planEnqueue with the on-disk index: an event with an id not accepted
// before becomes deliveries at once, like one without, and its id is to be
// recorded; a duplicate is answered with its subscribers and stores nothing.
func TestPlanEnqueueWithTheIndex(t *testing.T) {
	a := testEndpoint("a", "http://127.0.0.1:1", func(e *endpoint.Endpoint) { e.Events = []string{"message.sent"} })
	b := testEndpoint("b", "http://127.0.0.1:1")
	subscribers := subscribersAmong(a, b)
	events := []Event{testEvent(1), testEvent(2), testEvent(3)}
	events[0].IdempotencyKey = true
	events[1].IdempotencyKey = true
	events[2].Type = "session.connected"
	p, err := planEnqueue(events, "2026-12-07T10:00:00Z", subscribers, idPlan{direct: true, duplicate: []bool{false, true, false}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.withID) != 0 {
		t.Errorf("events for the events stream: %+v, want none", p.withID)
	}
	if !slices.Equal(p.recorded, []int{0}) {
		t.Errorf("ids to record: events %v, want [0]", p.recorded)
	}
	want := []EnqueueResult{{ID: events[0].ID, Subscribers: 2}, {ID: events[1].ID, Subscribers: 2, Duplicate: true}, {ID: events[2].ID, Subscribers: 1}}
	if !slices.Equal(p.results, want) {
		t.Errorf("results %+v, want %+v", p.results, want)
	}
	got := map[string][]string{}
	for _, g := range p.direct {
		for _, dl := range g.ds {
			got[g.ep.Name] = append(got[g.ep.Name], dl.EventID)
			for i := range events {
				if events[i].ID == dl.EventID {
					if body, _ := events[i].Envelope(); !bytes.Equal(dl.Body, body) {
						t.Errorf("delivery of %s to %s carries %s, want its own event's %s", dl.EventID, g.ep.Name, dl.Body, body)
					}
				}
			}
		}
	}
	if !slices.Equal(got["a"], []string{events[0].ID}) || !slices.Equal(got["b"], []string{events[0].ID, events[2].ID}) || len(got) != 2 {
		t.Errorf("deliveries by endpoint %v, want a: [%s], b: [%s %s]", got, events[0].ID, events[0].ID, events[2].ID)
	}
}
