package delivery

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wablast/webhook-operator/internal/endpoint"
	wtestutil "github.com/wablast/webhook-operator/internal/testutil"
)

func filtered(t *testing.T, name, expr string) func(*endpoint.Endpoint) {
	t.Helper()
	f, err := endpoint.CompileFilter("shop", name, expr)
	if err != nil {
		t.Fatalf("compiling %q: %v", expr, err)
	}
	return func(e *endpoint.Endpoint) { e.Filter = f }
}

// filterEvent is an event of type typ with data, with or without an id
// (an idempotency key: stored in the events stream and fanned out).
func filterTestEvent(id, typ, data string, withID bool) Event {
	return Event{ID: id, IdempotencyKey: withID, Namespace: "shop", Type: typ,
		Timestamp: time.Date(2026, 11, 28, 10, 15, 2, 123456789, time.UTC), Data: json.RawMessage(data)}
}

func TestOnlyEventsAFilterMatchesAreDelivered(t *testing.T) {
	h := newHarness(t, "", nil)
	rcv := map[string]*receiver{}
	for _, name := range []string{"campaign", "strict", "sessions", "everything"} {
		rcv[name] = newReceiver(t, nil)
	}
	h.reg.Upsert(testEndpoint("campaign", rcv["campaign"].URL, filtered(t, "campaign", `has(data.campaignId) && data.campaignId == "c-42"`)))
	// Without has(): an error on events without a campaignId, not matched.
	h.reg.Upsert(testEndpoint("strict", rcv["strict"].URL, filtered(t, "strict", `data.campaignId == "c-42"`)))
	h.reg.Upsert(testEndpoint("sessions", rcv["sessions"].URL, filtered(t, "sessions", `type.startsWith("session.") && timestamp > timestamp("2026-01-01T00:00:00Z")`)))
	h.reg.Upsert(testEndpoint("everything", rcv["everything"].URL))
	errors0 := filterErrorCount(t, "strict")

	events := []Event{
		filterTestEvent("msg_c42", "message.sent", `{"messageId":"m1","sessionId":"s1","to":"+6281234","campaignId":"c-42"}`, false),
		filterTestEvent("msg_c7", "message.sent", `{"messageId":"m2","sessionId":"s1","to":"+6281234","campaignId":"c-7"}`, false),
		filterTestEvent("sess_up", "session.connected", `{"sessionId":"s1","phoneNumber":"+6281234"}`, false),
		filterTestEvent("msg_c42_id", "message.failed", `{"messageId":"m3","sessionId":"s1","to":"+6281234","campaignId":"c-42","error":"blocked"}`, true),
		filterTestEvent("sess_down_id", "session.disconnected", `{"sessionId":"s1","phoneNumber":"+6281234"}`, true),
		filterTestEvent("msg_none_id", "message.delivered", `{"messageId":"m4","sessionId":"s1","to":"+6281234"}`, true),
	}
	res := h.enqueue(events...)
	// The 202's subscribers counts the endpoints whose filter matched.
	wantSubs := map[string]int{"msg_c42": 3, "msg_c7": 1, "sess_up": 2, "msg_c42_id": 3, "sess_down_id": 2, "msg_none_id": 1}
	for i, r := range res {
		if r.Subscribers != wantSubs[events[i].ID] {
			t.Errorf("%s: subscribers %d, want %d", events[i].ID, r.Subscribers, wantSubs[events[i].ID])
		}
	}

	want := map[string][]string{
		"campaign":   {"msg_c42", "msg_c42_id"},
		"strict":     {"msg_c42", "msg_c42_id"},
		"sessions":   {"sess_down_id", "sess_up"},
		"everything": {"msg_c42", "msg_c42_id", "msg_c7", "msg_none_id", "sess_down_id", "sess_up"},
	}
	wtestutil.EventuallyEvery(t, 15*time.Second, 20*time.Millisecond, func() error {
		for name, ids := range want {
			if got := slices.Sorted(maps.Keys(rcv[name].uniqueIDs())); len(got) < len(ids) {
				return fmt.Errorf("%s received %v so far, want %v", name, got, ids)
			}
		}
		return nil
	})
	// "everything" received every event, so each was fanned out: what
	// else a filter let through would have arrived by now.
	time.Sleep(300 * time.Millisecond)
	for name, ids := range want {
		if got := slices.Sorted(maps.Keys(rcv[name].uniqueIDs())); !slices.Equal(got, ids) {
			t.Errorf("%s received %v, want exactly %v", name, got, ids)
		}
		// Each one with the type, data and timestamp enqueued.
		var evs []Event
		for _, ev := range events {
			if slices.Contains(ids, ev.ID) {
				evs = append(evs, ev)
			}
		}
		rcv[name].checkAll(t, evs...)
	}
	// The strict filter failed on the three events without a campaignId,
	// each counted once, where its deliveries were decided (not again for
	// the 202 of an event fanned out, with an external NATS).
	if d := filterErrorCount(t, "strict") - errors0; d != 3 {
		t.Errorf("wablast_webhook_filter_errors_total{name=strict} grew by %v, want 3", d)
	}
}

// filterErrorCount reads wablast_webhook_filter_errors_total of shop/name
// from the registry the manager serves.
func filterErrorCount(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := metrics.Registry.(prometheus.Gatherer).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "wablast_webhook_filter_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == "shop" && labels["name"] == name {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
