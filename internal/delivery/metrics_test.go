package delivery

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
)

// The metrics kept for label sets already used are the exported ones.
func TestMetricsCountPerLabelSet(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	crm, erp := testEndpoint("crm", "http://x"), testEndpoint("erp", "http://x")
	ok := &attemptResult{statusCode: 200, duration: 3 * time.Millisecond}
	bad := &attemptResult{statusCode: 500, duration: time.Millisecond}
	m.attempt(&crm, "message.sent", ok)
	m.attempt(&crm, "message.sent", ok)
	m.attempt(&crm, "message.sent", bad)
	m.attempt(&erp, "message.failed", ok)
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"shop", "crm", "message.sent", "success"}, 2},
		{[]string{"shop", "crm", "message.sent", "failure"}, 1},
		{[]string{"shop", "erp", "message.failed", "success"}, 1},
	} {
		if got := promtest.ToFloat64(m.Deliveries.WithLabelValues(c.labels...)); got != c.want {
			t.Errorf("deliveries %v = %v, want %v", c.labels, got, c.want)
		}
	}
	if n := promtest.CollectAndCount(m.Duration); n != 2 {
		t.Errorf("%d duration series, want 2", n)
	}
	// Every endpoint and event type attempted has its failed-for-good
	// series, at 0 until a delivery fails for good.
	if n := promtest.CollectAndCount(m.Failed); n != 2 {
		t.Errorf("%d failed-for-good series, want 2 (crm message.sent, erp message.failed)", n)
	}
	if got := promtest.ToFloat64(m.Failed.WithLabelValues("shop", "crm", "message.sent")); got != 0 {
		t.Errorf("failed for good at crm = %v before any failure", got)
	}
	events := []Event{{Namespace: "shop", Type: "message.sent"}, {Namespace: "shop", Type: "message.sent"}, {Namespace: "shop", Type: "message.sent"}}
	m.accepted(events, []EnqueueResult{{}, {Duplicate: true}, {}})
	if got := promtest.ToFloat64(m.Accepted.WithLabelValues("shop", "message.sent")); got != 2 {
		t.Errorf("accepted = %v, want 2 (a duplicate is not counted)", got)
	}
}

// seriesOf returns the series in reg's metrics whose name label is name,
// as "metric{labels} value" strings.
func seriesOf(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "name" && l.GetValue() == name {
					out = append(out, fmt.Sprintf("%s%v", mf.GetName(), m.GetLabel()))
				}
			}
		}
	}
	return out
}

// forget removes every series of the endpoint, in every vector with
// per-endpoint labels, and leaves the others'; the next attempt to an
// endpoint of that name starts a series from zero that is exported (the
// cached metric went with the series).
func TestForgetRemovesTheSeriesOfAnEndpoint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	crm, erp := testEndpoint("crm", "http://x"), testEndpoint("erp", "http://x")
	for _, ep := range []*endpoint.Endpoint{&crm, &erp} {
		m.attempt(ep, "message.sent", &attemptResult{statusCode: 200, duration: time.Millisecond})
		m.attempt(ep, "message.sent", &attemptResult{refused: true, err: errors.New("refused")})
		m.delivered(ep, time.Second)
		m.failedForGood(ep, "message.sent")
		m.Retries.WithLabelValues(ep.Namespace, ep.Name).Inc()
		m.setBacklog(ep.Key(), 3, time.Minute)
	}
	m.keepBacklog(map[types.NamespacedName]struct{}{crm.Key(): {}, erp.Key(): {}})
	// Deliveries (success, failure), Duration, Refused, Latency, Failed,
	// Retries, Pending, Lag.
	if got := seriesOf(t, reg, "crm"); len(got) != 9 {
		t.Fatalf("crm has %d series before, want 9: %v", len(got), got)
	}
	before := seriesOf(t, reg, "erp")

	m.forget(crm.Key())
	if got := seriesOf(t, reg, "crm"); len(got) != 0 {
		t.Errorf("series left of a forgotten endpoint: %v", got)
	}
	if got := seriesOf(t, reg, "erp"); len(got) != len(before) {
		t.Errorf("the other endpoint's series went from %d to %d: %v", len(before), len(got), got)
	}

	m.attempt(&crm, "message.sent", &attemptResult{statusCode: 200, duration: time.Millisecond})
	if got := promtest.ToFloat64(m.Deliveries.WithLabelValues("shop", "crm", "message.sent", "success")); got != 1 {
		t.Errorf("a new crm's first success is exported as %v, want 1", got)
	}
	// A round of the backlog that no longer lists crm removes its series.
	m.setBacklog(crm.Key(), 1, 0)
	m.keepBacklog(map[types.NamespacedName]struct{}{erp.Key(): {}})
	if _, ok := gauge(t, m.Pending, "crm"); ok {
		t.Error("the pending series of an endpoint no longer registered is still there")
	}
}

// What the metrics cost a successful attempt: before this change
// (attempt) and with the end-to-end latency (attempt+latency), from 32
// goroutines as under load. docs/operations.md has the figures.
func BenchmarkMetricsPerSuccessfulAttempt(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry())
	ep := testEndpoint("crm", "http://x")
	r := &attemptResult{statusCode: 200, duration: time.Millisecond}
	b.Run("attempt", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.attempt(&ep, "message.sent", r)
			}
		})
	})
	b.Run("attempt+latency", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.attempt(&ep, "message.sent", r)
				m.delivered(&ep, 2*time.Second)
			}
		})
	})
}
