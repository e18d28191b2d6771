//go:build reliability

package reliability

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// The chart's memory limit for the manager, and the soft limit the manager
// gives the Go runtime inside it (85%, cmd/manager/memlimit.go).
const (
	chartMemoryLimit = 512 << 20
	chartGoMemLimit  = chartMemoryLimit / 100 * 85
)

// TestTwentyBatchesAtTheLimitStayUnderTheChartMemoryLimit posts 20 batches
// of the default maximum size (8 MiB, 1,000 events of about 8 KiB each) at
// once to the manager binary, run as the chart runs it (GOMEMLIMIT from the
// 512 MiB limit), while it delivers them: its peak resident set stays under
// the chart's limit. Batches over the decoding bound are answered 503 and
// posted again, as a producer does; every event accepted arrives with its
// content.
func TestTwentyBatchesAtTheLimitStayUnderTheChartMemoryLimit(t *testing.T) {
	ns, token, rc, m := setupCRM(t, 0, policy{}, managerOptions{
		dataDir: t.TempDir(),
		env:     []string{fmt.Sprintf("GOMEMLIMIT=%dB", chartGoMemLimit)},
	})
	const batches, perBatch = 20, 1000
	pad := strings.Repeat("Halo Budi, pesanan Anda sudah dikirim. ", 210)[:8000]
	var all []string
	bodies := make([][]testutil.Posted, batches)
	for b := range batches {
		evs := make([]testutil.Posted, perBatch)
		for i := range evs {
			id := fmt.Sprintf("big-%d-%d", b, i)
			evs[i] = testutil.Posted{ID: id, Type: "message.sent",
				Data: fmt.Appendf(nil, `{"messageId":%q,"sessionId":"s-%d","to":"+6281234567890","text":%q}`, "m-"+id, b, pad)}
			all = append(all, id)
		}
		bodies[b] = evs
		if n := len(testutil.NDJSON(evs, true)); n > 8<<20 {
			t.Fatalf("batch of %d bytes is over the default --max-batch-bytes", n)
		}
	}

	var wg sync.WaitGroup
	codes := make([]map[int]int, batches)
	for b := range batches {
		codes[b] = map[int]int{}
		wg.Go(func() {
			for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); {
				_, code, body, err := postEvents(m.IngestAddr, ns, token, rc.ledger, bodies[b], true, false)
				codes[b][code]++
				switch {
				case err != nil:
					t.Errorf("batch %d: %v", b, err)
					return
				case code == http.StatusAccepted:
					return
				case code != http.StatusServiceUnavailable || !strings.Contains(body, "overloaded"):
					t.Errorf("batch %d: %d %s, want 202 or 503 overloaded", b, code, body)
					return
				}
				time.Sleep(200 * time.Millisecond) // a producer's backoff
			}
			t.Errorf("batch %d not accepted within 3 minutes: %v", b, codes[b])
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	refused := 0
	for _, c := range codes {
		refused += c[http.StatusServiceUnavailable]
	}
	testutil.EventuallyEvery(t, 3*time.Minute, 250*time.Millisecond, func() error {
		if miss := missing(rc, all); len(miss) > 0 {
			return fmt.Errorf("%d of %d events not delivered yet", len(miss), len(all))
		}
		return nil
	})
	peak, err := m.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("RESULT 20 batches of 1,000 events of 8 KiB: %d answers 503 overloaded before each was accepted; peak RSS %.0f MiB (chart limit %d MiB)",
		refused, float64(peak)/(1<<20), chartMemoryLimit>>20)
	if peak >= chartMemoryLimit {
		t.Errorf("peak RSS %d MiB, over the chart's limit of %d MiB", peak>>20, chartMemoryLimit>>20)
	}
	rc.checkContent(t, "20 batches", all)
}
