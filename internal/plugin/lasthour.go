package plugin

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
)

const (
	// lastHourBuckets is how many bars the sparklines have: 5 minutes each.
	lastHourBuckets = 12
	// lastHourScanLimit caps how many deliveries status reads from the
	// delivery log, newest first, in pages of lastHourPage.
	lastHourScanLimit = 20000
	lastHourPage      = 1000
)

// lastHour is what `kubectl webhook status` shows of the last hour, from the
// delivery log: attempts that delivered and attempts that failed in
// 5-minute buckets, the latency from acceptance to delivery, each attempt's
// duration, and the delivery lag (the age of the oldest delivery still
// pending or retrying).
type lastHour struct {
	delivered, failed [lastHourBuckets]int
	// latencies are acceptance to successful attempt; durations are every
	// attempt's request time.
	latencies, durations []time.Duration
	// oldestWaiting is the oldest delivery pending or retrying; nil: none.
	oldestWaiting *deliveryv1alpha1.WebhookDelivery
	scanned       int
	capped        bool
}

// add counts the attempts of d that ended in the hour before now.
func (h *lastHour) add(d *deliveryv1alpha1.WebhookDelivery, now time.Time) {
	h.scanned++
	start := now.Add(-time.Hour)
	for i := range d.Status.Attempts {
		a := &d.Status.Attempts[i]
		t := a.Time.Time
		if t.Before(start) || t.After(now) {
			continue
		}
		b := min(int(t.Sub(start)/(time.Hour/lastHourBuckets)), lastHourBuckets-1)
		if a.Attempted {
			h.durations = append(h.durations, time.Duration(a.DurationMilliseconds)*time.Millisecond)
		}
		if a.Result == string(deliveryv1alpha1.StateSucceeded) {
			h.delivered[b]++
			if d.Spec.AcceptedAt != nil {
				h.latencies = append(h.latencies, t.Sub(d.Spec.AcceptedAt.Time))
			}
		} else {
			h.failed[b]++
		}
	}
	if d.Status.State == deliveryv1alpha1.StatePending || d.Status.State == deliveryv1alpha1.StateRetrying {
		if h.oldestWaiting == nil || acceptedAt(d).Before(acceptedAt(h.oldestWaiting)) {
			h.oldestWaiting = d.DeepCopy()
		}
	}
}

func acceptedAt(d *deliveryv1alpha1.WebhookDelivery) time.Time {
	if d.Spec.AcceptedAt != nil {
		return d.Spec.AcceptedAt.Time
	}
	return d.CreationTimestamp.Time
}

// readLastHour reads the webhook's deliveries from the delivery log, newest
// first, until they were all read or lastHourScanLimit were.
func readLastHour(ctx context.Context, c client.Client, ns, webhook string, now time.Time) (*lastHour, error) {
	h := &lastHour{}
	cont := ""
	for {
		var list deliveryv1alpha1.WebhookDeliveryList
		opts := []client.ListOption{client.InNamespace(ns), client.MatchingFields{"spec.webhook": webhook}, client.Limit(lastHourPage)}
		if cont != "" {
			opts = append(opts, client.Continue(cont))
		}
		if err := c.List(ctx, &list, opts...); err != nil {
			return nil, err
		}
		for i := range list.Items {
			h.add(&list.Items[i], now)
		}
		cont = list.Continue
		if cont == "" {
			return h, nil
		}
		if h.scanned >= lastHourScanLimit {
			h.capped = true
			return h, nil
		}
	}
}

// render writes the last hour's section.
func (h *lastHour) render(w io.Writer, now time.Time) {
	fmt.Fprintf(w, "Last hour:\t(delivery log; 5-minute bars, oldest left, one height for both rows)\n")
	top := max(slices.Max(h.delivered[:]), slices.Max(h.failed[:]))
	fmt.Fprintf(w, "  Delivered:\t%s  %d %s\n", sparkline(h.delivered[:], top), sum(h.delivered[:]), plural(int64(sum(h.delivered[:])), "attempt", "attempts"))
	fmt.Fprintf(w, "  Failed:\t%s  %d %s\n", sparkline(h.failed[:], top), sum(h.failed[:]), plural(int64(sum(h.failed[:])), "attempt", "attempts"))
	fmt.Fprintf(w, "  Latency:\t%s (accepted to delivered)\n", percentiles(h.latencies))
	fmt.Fprintf(w, "  Attempt duration:\t%s\n", percentiles(h.durations))
	if d := h.oldestWaiting; d != nil {
		fmt.Fprintf(w, "  Delivery lag:\t%s (the oldest waiting delivery: event %s, %s, %d %s)\n", roundDuration(now.Sub(acceptedAt(d))),
			d.Spec.EventID, d.Status.State, len(d.Status.Attempts), plural(int64(len(d.Status.Attempts)), "attempt", "attempts"))
	} else {
		fmt.Fprintf(w, "  Delivery lag:\t0 (nothing waiting)\n")
	}
	if h.capped {
		fmt.Fprintf(w, "  Note:\tonly the newest %d deliveries were read\n", h.scanned)
	}
}

// sparkBars are the heights of a sparkline, lowest first.
var sparkBars = []rune("▁▂▃▄▅▆▇█")

// sparkline draws counts as bars scaled to top; a zero is "·", so that a
// bucket with nothing is told from one with little.
func sparkline(counts []int, top int) string {
	var b strings.Builder
	for _, n := range counts {
		if n <= 0 || top <= 0 {
			b.WriteRune('·')
			continue
		}
		// 1..top onto the 8 bars, rounding up so any count shows a bar.
		i := (n*len(sparkBars) + top - 1) / top
		b.WriteRune(sparkBars[min(max(i, 1), len(sparkBars))-1])
	}
	return b.String()
}

// percentiles renders p50 and p99 of ds (nearest rank), or "-" with none.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p int) time.Duration { return s[max((p*len(s)+99)/100, 1)-1] }
	return fmt.Sprintf("p50 %s, p99 %s (%d)", roundDuration(rank(50)), roundDuration(rank(99)), len(s))
}

// roundDuration keeps a duration readable: ms below a second, else 0.1 s.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

func sum(ns []int) int {
	t := 0
	for _, n := range ns {
		t += n
	}
	return t
}
