//go:build soak

package soak

import (
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// endpoint is a loopback receiver: a testutil.Receiver (the content
// oracle: it verifies every request with the official Standard Webhooks
// library and keeps every body by webhook-id) whose answer is 503 for a
// share of requests, and for every request during the outage, else 204.
// It records when each webhook-id was first answered 2xx.
type endpoint struct {
	name string
	rc   *testutil.Receiver
	srv  *httptest.Server
	// fail is the share of requests answered 503.
	fail float64
	// outageUntil is the end of the outage, Unix nanoseconds (0: none).
	outageUntil atomic.Int64

	mu      sync.Mutex
	firstOK map[string]time.Time
	oks     map[string]int // 2xx answers per webhook-id
	answers map[int]int    // answers by status

	delivered atomic.Int64 // distinct webhook-ids answered 2xx
	requests  atomic.Int64 // verified requests
}

func newEndpoint(t *testing.T, name string, ledger *testutil.Ledger, fail float64) *endpoint {
	t.Helper()
	rc, err := testutil.NewReceiver(signingSecret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{name: name, rc: rc, fail: fail, firstOK: map[string]time.Time{}, oks: map[string]int{}, answers: map[int]int{}}
	rc.Respond = e.respond
	e.srv = httptest.NewServer(rc)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpoint) respond(w http.ResponseWriter, _ *http.Request, d testutil.Delivery) int {
	e.requests.Add(1)
	code := http.StatusNoContent
	if until := e.outageUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		code = http.StatusServiceUnavailable
	} else if e.fail > 0 && rand.Float64() < e.fail {
		code = http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	now := time.Now()
	e.mu.Lock()
	e.answers[code]++
	if code < 300 {
		e.oks[d.ID]++
		if _, ok := e.firstOK[d.ID]; !ok {
			e.firstOK[d.ID] = now
			e.delivered.Add(1)
		}
	}
	e.mu.Unlock()
	return code
}

// firstOKs returns when each webhook-id was first answered 2xx (a copy).
func (e *endpoint) firstOKs() map[string]time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.firstOK)
}

// duplicates returns the number of webhook-ids answered 2xx more than
// once, and the 2xx answers beyond the first.
func (e *endpoint) duplicates() (ids, extra int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.oks {
		if n > 1 {
			ids++
			extra += n - 1
		}
	}
	return ids, extra
}

func (e *endpoint) answerCounts() map[int]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[int]int, len(e.answers))
	for k, v := range e.answers {
		out[k] = v
	}
	return out
}
