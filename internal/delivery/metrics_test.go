package delivery

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
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
	events := []Event{{Namespace: "shop", Type: "message.sent"}, {Namespace: "shop", Type: "message.sent"}, {Namespace: "shop", Type: "message.sent"}}
	m.accepted(events, []EnqueueResult{{}, {Duplicate: true}, {}})
	if got := promtest.ToFloat64(m.Accepted.WithLabelValues("shop", "message.sent")); got != 2 {
		t.Errorf("accepted = %v, want 2 (a duplicate is not counted)", got)
	}
}
