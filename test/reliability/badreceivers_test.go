//go:build reliability

package reliability

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestBadReceiversSideBySide runs, in one manager (the in-process wiring),
// four endpoints of one namespace subscribed to the same 300 events: one
// that fails half of the requests at random, one that resets every
// connection, one that never answers, and a healthy one. Every event ends
// delivered or failed for good on every endpoint as its policy says, and the
// healthy endpoint's p99 receive latency stays close to what it is when it
// is alone. Every request each receiver got, on every endpoint and attempt,
// carries exactly the content posted.
func TestBadReceiversSideBySide(t *testing.T) {
	const n = 300

	// The baseline: the healthy endpoint alone, measured the same way.
	var aloneP99, aloneP50, aloneMax, aloneStall time.Duration
	t.Run("healthy endpoint alone", func(t *testing.T) {
		ns := env.Namespace(t)
		r := startInProcess(t, ns, t.TempDir())
		healthy := newReceiver(t, testutil.NewLedger(), answerOK)
		createEndpoint(t, ns, "healthy", healthy.URL+"/hooks", policy{})
		token := randomToken()
		createIngestToken(t, ns, token)
		waitWHCReady(t, ns, "healthy")
		var lat []time.Duration
		lat, aloneStall = measureLatency(t, r.op.Ingest.Addr(), ns, token, healthy, "alone", n)
		aloneP50, aloneP99, aloneMax = percentile(lat, 50), percentile(lat, 99), percentile(lat, 100)
		waitCounters(t, ns, "healthy", n+warmups, 0)
		healthy.checkContent(t, "bad receivers, healthy alone", healthy.ledger.IDs())
	})
	if t.Failed() {
		return
	}

	ns := env.Namespace(t)
	r := startInProcess(t, ns, t.TempDir())
	token := randomToken()
	createIngestToken(t, ns, token)

	// One ledger: every endpoint receives the same events.
	ledger := testutil.NewLedger()
	healthy := newReceiver(t, ledger, answerOK)
	flaky := newReceiver(t, ledger, func(w http.ResponseWriter, _ *http.Request) int {
		if rand.IntN(2) == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	})
	reset := newReceiver(t, ledger, func(w http.ResponseWriter, _ *http.Request) int {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return 0
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = conn.Close()
		return 0
	})
	var hang *receiver
	hang = newReceiver(t, ledger, func(_ http.ResponseWriter, r *http.Request) int {
		select {
		case <-r.Context().Done(): // the manager gave up (timeoutSeconds)
		case <-hang.closing:
		}
		return 0
	})

	// The bad endpoints subscribe to message.sent only, so that the
	// warm-up events (message.delivered) reach the healthy one alone and
	// each bad endpoint gets exactly the n measured events.
	sent := []webhooksv1alpha1.EventType{webhooksv1alpha1.EventMessageSent}
	policies := map[string]policy{
		"flaky": {maxAttempts: 10, initialBackoff: 1, maxBackoff: 2, events: sent},
		"reset": {maxAttempts: 3, initialBackoff: 1, maxBackoff: 2, events: sent},
		// maxInFlight 50 rather than 16 only bounds the test's duration:
		// 300 events x 2 attempts x 2 s / 50.
		"hang":    {timeoutSeconds: 2, maxAttempts: 2, initialBackoff: 1, maxBackoff: 2, maxInFlight: 50, events: sent},
		"healthy": {},
	}
	receivers := map[string]*receiver{"flaky": flaky, "reset": reset, "hang": hang, "healthy": healthy}
	for _, name := range []string{"flaky", "reset", "hang", "healthy"} {
		createEndpoint(t, ns, name, receivers[name].URL+"/hooks", policies[name])
	}
	waitWHCReady(t, ns, "flaky", "reset", "hang", "healthy")

	start := time.Now()
	lat, mixedStall := measureLatency(t, r.op.Ingest.Addr(), ns, token, healthy, "side by side", n)
	mixedP50, mixedP99 := percentile(lat, 50), percentile(lat, 99)
	ms := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	t.Logf("RESULT bad receivers: healthy endpoint receive latency alone p50 %s p99 %s max %s; next to the bad ones p50 %s p99 %s max %s (longest scheduling stall of the test process: %s alone, %s side by side)",
		ms(aloneP50), ms(aloneP99), ms(aloneMax), ms(mixedP50), ms(mixedP99), ms(percentile(lat, 100)), ms(aloneStall), ms(mixedStall))
	// The bound: 2x the p99 alone, or +50 ms, whichever is larger. On two
	// shared cores the whole machine sometimes stalls the test process (and
	// the in-process manager) for ~100 ms, which lands on a whole batch and
	// so on the p99: when the process's own longest scheduling stall in the
	// phase accounts for the excess, the comparison says nothing about the
	// product and is reported as inconclusive. A healthy endpoint really held
	// up by the bad ones waits for their backoff (1 s) or timeout (2 s):
	// a p99 of 1 s or more fails whatever the machine did.
	limit := max(2*aloneP99, aloneP99+50*time.Millisecond)
	switch {
	case mixedP99 <= limit:
	case mixedP99 < time.Second && mixedStall >= mixedP99-limit:
		t.Logf("RESULT bad receivers: INCONCLUSIVE latency comparison: p99 %s next to bad receivers, %s alone (limit %s), but the test process itself stalled %s in that phase: the machine was busy",
			mixedP99, aloneP99, limit, mixedStall)
	default:
		t.Errorf("the healthy endpoint's p99 receive latency is %s next to bad receivers, %s alone (limit: 2x or +50ms = %s; the test process's longest scheduling stall in that phase was %s): bad endpoints hold up a healthy one",
			mixedP99, aloneP99, limit, mixedStall)
	}

	// Every event on every endpoint ends delivered or failed for good.
	for _, name := range []string{"healthy", "flaky", "reset", "hang"} {
		want := int64(n)
		if name == "healthy" {
			want += warmups
		}
		testutil.EventuallyEvery(t, 3*time.Minute, 500*time.Millisecond, func() error {
			c := statusCounters(t, ns, name)
			if c.Delivered+c.Failed != want || c.Pending != 0 {
				return fmt.Errorf("%s: %s, want delivered+failed = %d and pending 0", name, c, want)
			}
			return nil
		})
		t.Logf("RESULT bad receivers: %-7s settled %s after the first post: %s; receiver answers %v",
			name, time.Since(start).Round(100*time.Millisecond), statusCounters(t, ns, name), receivers[name].statusCounts())
	}

	// ...as each policy says.
	check := func(name string, c counters, wantDelivered, wantFailed int64) {
		t.Helper()
		if c.Delivered != wantDelivered || c.Failed != wantFailed {
			t.Errorf("%s: status %s, want delivered %d failed %d", name, c, wantDelivered, wantFailed)
		}
	}
	ids := idRange("side-by-side", 0, n)

	// healthy: each event once.
	hc := healthy.okCounts()
	check("healthy", statusCounters(t, ns, "healthy"), n+warmups, 0)
	for _, id := range ids {
		if hc[id] != 1 {
			t.Errorf("healthy: %s received %d times", id, hc[id])
		}
	}

	// flaky: delivered after at most 10 attempts, or failed after exactly 10.
	fReq, fOK := flaky.requestCounts(), flaky.okCounts()
	var fDelivered, fFailed int64
	for _, id := range ids {
		switch {
		case fOK[id] == 1 && fReq[id] <= 10:
			fDelivered++
		case fOK[id] == 0 && fReq[id] == 10:
			fFailed++
		default:
			t.Errorf("flaky: %s had %d requests and %d 2xx answers (maxAttempts 10)", id, fReq[id], fOK[id])
		}
	}
	check("flaky", statusCounters(t, ns, "flaky"), fDelivered, fFailed)

	// reset: 3 attempts each, then failed.
	rReq := reset.requestCounts()
	for _, id := range ids {
		if rReq[id] != 3 {
			t.Errorf("reset: %s attempted %d times, maxAttempts 3", id, rReq[id])
		}
	}
	check("reset", statusCounters(t, ns, "reset"), 0, n)

	// hang: 2 attempts each (timeoutSeconds 2), then failed.
	hReq := hang.requestCounts()
	for _, id := range ids {
		if hReq[id] != 2 {
			t.Errorf("hang: %s attempted %d times, maxAttempts 2", id, hReq[id])
		}
	}
	check("hang", statusCounters(t, ns, "hang"), 0, n)
	for _, name := range []string{"reset", "hang"} {
		st := getWHC(t, ns, name).Status
		if st.LastDelivery == nil || st.LastDelivery.Error == "" {
			t.Errorf("%s: lastDelivery %+v gives no error", name, st.LastDelivery)
		} else {
			t.Logf("RESULT bad receivers: %s lastDelivery.error %q", name, st.LastDelivery.Error)
		}
	}
	for name, rc := range receivers {
		if bad := rc.badSig.Load(); bad != 0 {
			t.Errorf("%s: %d requests failed signature verification", name, bad)
		}
	}
	// Content: every request of every endpoint (the failed attempts too)
	// carries what was posted; the bad endpoints got each measured event,
	// the healthy one the warm-ups too.
	for _, name := range []string{"healthy", "flaky", "reset", "hang"} {
		want := ids
		if name == "healthy" {
			want = ledger.IDs()
		}
		receivers[name].checkContent(t, "bad receivers, "+name, want)
	}
}

// warmups is the number of warm-up events measureLatency posts first.
const warmups = 20

// measureLatency posts a few warm-up events, then n events in batches of
// 10 every 100 ms, and returns, for each, the time from the start of its
// post to its first 2xx at rc; and the longest scheduling stall the test
// process saw meanwhile (a goroutine sleeping 1 ms at a time), which tells
// a busy machine from a slow product.
func measureLatency(t *testing.T, addr, ns, token string, rc *receiver, label string, n int) ([]time.Duration, time.Duration) {
	t.Helper()
	prefix := strings.ReplaceAll(label, " ", "-")
	warm := idRange(prefix+"-warmup", 0, warmups)
	if _, code, body, err := postEvents(addr, ns, token, rc.ledger, events(warm, "message.delivered"), true, false); code != http.StatusAccepted || err != nil {
		t.Fatalf("warm-up: %d %s %v", code, body, err)
	}
	testutil.EventuallyEvery(t, 30*time.Second, 20*time.Millisecond, func() error {
		if miss := missing(rc, warm); len(miss) > 0 {
			return fmt.Errorf("%d warm-up events missing", len(miss))
		}
		return nil
	})

	stop := make(chan struct{})
	stalled := make(chan time.Duration, 1)
	go func() {
		var worst time.Duration
		for {
			select {
			case <-stop:
				stalled <- worst
				return
			default:
			}
			t0 := time.Now()
			time.Sleep(time.Millisecond)
			worst = max(worst, time.Since(t0)-time.Millisecond)
		}
	}()

	ids := idRange(prefix, 0, n)
	sent := make(map[string]time.Time, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; i += 10 {
		batch := ids[i:min(i+10, n)]
		wg.Go(func() {
			at := time.Now()
			_, code, body, err := postEvents(addr, ns, token, rc.ledger, events(batch, "message.sent"), true, false)
			if code != http.StatusAccepted || err != nil {
				t.Errorf("post: %d %s %v", code, body, err)
				return
			}
			mu.Lock()
			for _, id := range batch {
				sent[id] = at
			}
			mu.Unlock()
		})
		<-tick.C
	}
	wg.Wait()
	testutil.EventuallyEvery(t, time.Minute, 20*time.Millisecond, func() error {
		if miss := missing(rc, ids); len(miss) > 0 {
			return fmt.Errorf("%s: %d of %d events not received", label, len(miss), n)
		}
		return nil
	})
	lat := make([]time.Duration, 0, n)
	for _, id := range ids {
		at := rc.firstOKAt(id)
		lat = append(lat, at.Sub(sent[id]))
	}
	close(stop)
	return lat, <-stalled
}

// waitCounters waits for the status to count delivered and failed, nothing pending.
func waitCounters(t *testing.T, ns, name string, delivered, failed int64) {
	t.Helper()
	testutil.EventuallyEvery(t, time.Minute, 250*time.Millisecond, func() error {
		c := statusCounters(t, ns, name)
		if c.Delivered < delivered || c.Failed != failed || c.Pending != 0 {
			return fmt.Errorf("%s: %s, want delivered %d failed %d", name, c, delivered, failed)
		}
		return nil
	})
}
