package plugin

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
)

func TestSparkline(t *testing.T) {
	for _, tc := range []struct {
		counts []int
		top    int
		want   string
	}{
		{[]int{0, 1, 4, 8}, 8, "·▁▄█"},
		{[]int{0, 0}, 0, "··"},
		{[]int{1, 100}, 100, "▁█"}, // any count shows a bar
		{[]int{3, 5, 7}, 7, "▄▆█"},
	} {
		if got := sparkline(tc.counts, tc.top); got != tc.want {
			t.Errorf("sparkline(%v, %d) = %q, want %q", tc.counts, tc.top, got, tc.want)
		}
	}
}

func TestPercentiles(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		ds := make([]time.Duration, len(ns))
		for i, n := range ns {
			ds[i] = time.Duration(n) * time.Millisecond
		}
		return ds
	}
	for _, tc := range []struct {
		ds   []time.Duration
		want string
	}{
		{nil, "-"},
		{ms(30, 10, 20), "p50 20ms, p99 30ms (3)"},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
			41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80,
			81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 2500), "p50 50ms, p99 99ms (100)"},
		{[]time.Duration{90 * time.Second}, "p50 1m30s, p99 1m30s (1)"},
	} {
		if got := percentiles(tc.ds); got != tc.want {
			t.Errorf("percentiles(%v) = %q, want %q", tc.ds, got, tc.want)
		}
	}
}

// TestLastHour counts a known set of deliveries: attempts inside the hour
// by bucket, one outside it, latency from acceptance, attempt durations and
// the oldest waiting delivery.
func TestLastHour(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) metav1.MicroTime { return metav1.NewMicroTime(now.Add(d)) }
	accepted := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }
	deliveries := []deliveryv1alpha1.WebhookDelivery{
		{ // retried once, then delivered: a failure in bucket 2, a delivery in bucket 3
			Spec: deliveryv1alpha1.WebhookDeliverySpec{EventID: "evt-1", AcceptedAt: accepted(-50 * time.Minute)},
			Status: deliveryv1alpha1.WebhookDeliveryStatus{State: deliveryv1alpha1.StateSucceeded, Attempts: []deliveryv1alpha1.DeliveryAttempt{
				{Attempt: 1, Attempted: true, Time: at(-50 * time.Minute), DurationMilliseconds: 20, StatusCode: 500, Result: "Retrying"},
				{Attempt: 2, Attempted: true, Time: at(-45 * time.Minute), DurationMilliseconds: 30, StatusCode: 200, Result: "Succeeded"},
			}},
		},
		{ // retrying now: a failure in the last bucket, and the lag
			Spec: deliveryv1alpha1.WebhookDeliverySpec{EventID: "evt-2", AcceptedAt: accepted(-2 * time.Minute)},
			Status: deliveryv1alpha1.WebhookDeliveryStatus{State: deliveryv1alpha1.StateRetrying, Attempts: []deliveryv1alpha1.DeliveryAttempt{
				{Attempt: 1, Attempted: true, Time: at(-time.Minute), DurationMilliseconds: 10, Result: "Retrying", Error: "connection refused"},
			}},
		},
		{ // delivered three hours ago: not in the hour
			Spec: deliveryv1alpha1.WebhookDeliverySpec{EventID: "evt-3", AcceptedAt: accepted(-3 * time.Hour)},
			Status: deliveryv1alpha1.WebhookDeliveryStatus{State: deliveryv1alpha1.StateSucceeded, Attempts: []deliveryv1alpha1.DeliveryAttempt{
				{Attempt: 1, Attempted: true, Time: at(-3 * time.Hour), DurationMilliseconds: 999, StatusCode: 200, Result: "Succeeded"},
			}},
		},
		{ // pending, younger than evt-2
			Spec:   deliveryv1alpha1.WebhookDeliverySpec{EventID: "evt-4", AcceptedAt: accepted(-10 * time.Second)},
			Status: deliveryv1alpha1.WebhookDeliveryStatus{State: deliveryv1alpha1.StatePending},
		},
		{ // given up without a request (too old): a failure, no duration
			Spec: deliveryv1alpha1.WebhookDeliverySpec{EventID: "evt-5", AcceptedAt: accepted(-30 * time.Hour)},
			Status: deliveryv1alpha1.WebhookDeliveryStatus{State: deliveryv1alpha1.StateFailed, Attempts: []deliveryv1alpha1.DeliveryAttempt{
				{Attempt: 6, Attempted: false, Time: at(-59*time.Minute - 59*time.Second), Result: "Failed", Error: "too old"},
			}},
		},
	}
	h := &lastHour{}
	for i := range deliveries {
		h.add(&deliveries[i], now)
	}
	var out bytes.Buffer
	w := newTabWriter(&out)
	h.render(w, now)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := `Last hour:           (delivery log; 5-minute bars, oldest left, one height for both rows)
  Delivered:         ···█········  1 attempt
  Failed:            █·█········█  3 attempts
  Latency:           p50 5m0s, p99 5m0s (1) (accepted to delivered)
  Attempt duration:  p50 20ms, p99 30ms (3)
  Delivery lag:      2m0s (the oldest waiting delivery: event evt-2, Retrying, 1 attempt)
`
	if got := out.String(); got != want {
		t.Errorf("rendered:\n%s\nwant:\n%s", got, want)
	}

	empty := &lastHour{}
	out.Reset()
	w = newTabWriter(&out)
	empty.render(w, now)
	_ = w.Flush()
	for _, line := range []string{"Delivered:  ············  0 attempts", "Latency:    - (accepted to delivered)", "Delivery lag: 0 (nothing waiting)"} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), strings.Join(strings.Fields(line), " ")) {
			t.Errorf("empty hour: no %q in:\n%s", line, out.String())
		}
	}
}
