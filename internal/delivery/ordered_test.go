package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// orderChecker is a receiver's check of PerKey delivery: a request for the
// n-th event of a key may come only once the (n-1)-th was answered 2xx,
// and never after the (n+1)-th was (a repeat of the n-th before that is at
// least once, and allowed). It answers 2xx unless fail says otherwise.
type orderChecker struct {
	mu         sync.Mutex
	lastOK     map[string]int
	violations []string
	fail       func(key string, n int) bool
}

func newOrderChecker(fail func(key string, n int) bool) *orderChecker {
	return &orderChecker{lastOK: map[string]int{}, fail: fail}
}

func (c *orderChecker) check(w http.ResponseWriter, key string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if last := c.lastOK[key]; last != n-1 && last != n {
		c.violations = append(c.violations, fmt.Sprintf("key %s: event %d arrived after event %d was delivered", key, n, last))
	}
	if c.fail != nil && c.fail(key, n) {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if n > c.lastOK[key] {
		c.lastOK[key] = n
	}
	w.WriteHeader(http.StatusNoContent)
}

func (c *orderChecker) delivered(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastOK[key]
}

// waitDelivered waits until keys k<from> to k<to-1> each had their n-th
// event answered 2xx.
func (c *orderChecker) waitDelivered(t *testing.T, timeout time.Duration, n, from, to int) {
	t.Helper()
	testutil.EventuallyEvery(t, timeout, 10*time.Millisecond, func() error {
		for k := from; k < to; k++ {
			if got := c.delivered(fmt.Sprintf("k%d", k)); got != n {
				return fmt.Errorf("key k%d: %d of %d delivered", k, got, n)
			}
		}
		return nil
	})
}

func (c *orderChecker) report(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, v := range c.violations {
		if i == 10 {
			t.Errorf("... and %d more", len(c.violations)-10)
			break
		}
		t.Error(v)
	}
}

// failingAtRandom fails a share of requests at random, from a seeded
// generator, for an orderChecker.
func failingAtRandom(share float64, seed1, seed2 uint64) func(string, int) bool {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed1, seed2))
	return func(string, int) bool {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64() < share
	}
}

// orderedReceiver is a receiver whose requests go through an orderChecker.
func orderedReceiver(t *testing.T, c *orderChecker) *receiver {
	return newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		var env struct {
			Data struct {
				MessageID string `json:"messageId"`
				N         int    `json:"n"`
			} `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		c.check(w, env.Data.MessageID, env.Data.N)
	})
}

// keyedEvents returns n events for each of keys keys, the n-th of key k
// with data {"messageId": "k<k>", "n": n}, interleaved at random as a
// producer would post them: each key's events in order.
func keyedEvents(prefix string, keys, n int, rng *rand.Rand) []Event {
	next := make([]int, keys)
	out := make([]Event, 0, keys*n)
	for len(out) < keys*n {
		k := rng.IntN(keys)
		if next[k] == n {
			continue
		}
		next[k]++
		out = append(out, Event{
			ID: fmt.Sprintf("%s-k%d-%d", prefix, k, next[k]), Namespace: "shop", Type: "message.sent",
			Timestamp: time.Date(2026, 12, 8, 10, 0, 0, 0, time.UTC),
			Data:      json.RawMessage(fmt.Sprintf(`{"messageId":"k%d","n":%d,"to":"+6281234567890"}`, k, next[k])),
		})
	}
	return out
}

func perKey(e *endpoint.Endpoint) {
	e.Policy.PerKey = true
	e.Policy.InitialBackoff = 20 * time.Millisecond
	e.Policy.MaxBackoff = 100 * time.Millisecond
	e.Policy.MaxAttempts = 20
	k, err := endpoint.CompileOrderingKey(e.Namespace, e.Name, "")
	if err != nil {
		panic(err)
	}
	e.OrderingKey = k
}

func TestPerKeyDeliversEachKeysEventsInAcceptanceOrder(t *testing.T) {
	c := newOrderChecker(failingAtRandom(0.3, 1, 2))
	rc := orderedReceiver(t, c)
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("ordered", rc.URL, perKey))

	const keys, n = 20, 15
	events := keyedEvents("ord", keys, n, rand.New(rand.NewPCG(3, 4)))
	for i := 0; i < len(events); i += 7 {
		h.enqueue(events[i:min(i+7, len(events))]...)
	}
	c.waitDelivered(t, 60*time.Second, n, 0, keys)
	c.report(t)
	rc.checkAll(t, events...)
	if p := rc.peak.Load(); p > 4 {
		t.Errorf("%d requests open at once, maxInFlight is 4", p)
	}
}

func TestARetryingKeyHoldsBackOnlyItsOwnKey(t *testing.T) {
	var stuck sync.Mutex
	stuckUntil := time.Now().Add(time.Hour)
	c := newOrderChecker(func(key string, _ int) bool {
		stuck.Lock()
		defer stuck.Unlock()
		return key == "k0" && time.Now().Before(stuckUntil)
	})
	rc := orderedReceiver(t, c)
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("ordered", rc.URL, perKey))

	events := keyedEvents("hol", 5, 10, rand.New(rand.NewPCG(5, 6)))
	h.enqueue(events...)
	// Every other key is delivered in full while k0's first event fails.
	c.waitDelivered(t, 30*time.Second, 10, 1, 5)
	if got := c.delivered("k0"); got != 0 {
		t.Fatalf("k0 delivered up to %d while its first event failed", got)
	}
	stuck.Lock()
	stuckUntil = time.Now()
	stuck.Unlock()
	c.waitDelivered(t, 30*time.Second, 10, 0, 1)
	c.report(t)
	rc.checkAll(t, events...)
}

func TestPerKeyOrderHoldsAcrossACrash(t *testing.T) { perKeyAcrossACrash(t) }

// Likewise when the restarted worker has room for only a few keys' lanes
// at a time: it finds the others in the stream as lanes free up.
func TestPerKeyOrderHoldsAcrossACrashWithFewLanes(t *testing.T) {
	defer func(n int) { maxLanes = n }(maxLanes)
	maxLanes = 4
	perKeyAcrossACrash(t)
}

func perKeyAcrossACrash(t *testing.T) {
	c := newOrderChecker(failingAtRandom(0.3, 7, 8))
	rc := orderedReceiver(t, c)
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("ordered", rc.URL, perKey))

	const keys, n = 10, 20
	events := keyedEvents("crash", keys, n, rand.New(rand.NewPCG(9, 10)))
	half := len(events) / 2
	h.enqueue(events[:half]...)
	testutil.EventuallyEvery(t, 30*time.Second, 5*time.Millisecond, func() error {
		if len(rc.requests()) < half/3 {
			return fmt.Errorf("%d requests so far", len(rc.requests()))
		}
		return nil
	})
	h.crash()
	h.start()
	h.enqueue(events[half:]...)
	c.waitDelivered(t, 60*time.Second, n, 0, keys)
	c.report(t)
	rc.checkAll(t, events...)
}

func TestPerKeyEndpointsAreDeliveredByTheLeaderOnly(t *testing.T) {
	c := newOrderChecker(nil)
	rc := orderedReceiver(t, c)
	var leaderMu sync.Mutex
	leader := false
	h := newHarness(t, "", nil)
	h.stop()
	h.tune = func(o *Options) {
		o.IsLeader = func() bool {
			leaderMu.Lock()
			defer leaderMu.Unlock()
			return leader
		}
	}
	h.start()
	h.reg.Upsert(testEndpoint("ordered", rc.URL, perKey))
	events := keyedEvents("leader", 3, 5, rand.New(rand.NewPCG(11, 12)))
	h.enqueue(events...)
	syncs := h.d.Syncs()
	testutil.Eventually(t, 10*time.Second, func() error {
		if h.d.Syncs() < syncs+10 {
			return fmt.Errorf("%d syncs", h.d.Syncs()-syncs)
		}
		return nil
	})
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("a replica that is not the leader made %d requests to a PerKey endpoint", n)
	}
	leaderMu.Lock()
	leader = true
	leaderMu.Unlock()
	c.waitDelivered(t, 30*time.Second, 5, 0, 3)
	c.report(t)
	rc.checkAll(t, events...)
}

// With an external NATS, events with an id are fanned out from the events
// stream: those a PerKey endpoint subscribes to by the leader alone, one
// after the other, so two managers accepting a key's events in turn still
// deliver them in order.
func TestPerKeyOrderHoldsWithTwoManagersOnOneNATS(t *testing.T) {
	ns := startNATSServer(t)
	c := newOrderChecker(failingAtRandom(0.2, 13, 14))
	rc := orderedReceiver(t, c)
	ep := testEndpoint("ordered", rc.URL, perKey)
	egress, err := NewEgressPolicy([]string{"127.0.0.0/8"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var managers []*Dispatcher
	var running sync.WaitGroup
	var stores []*store.Store
	defer func() {
		cancel()
		running.Wait()
		for _, s := range stores {
			s.Close()
		}
	}()
	for i := range 2 {
		st, err := store.Open(t.Context(), store.Options{URL: ns.ClientURL()})
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, st)
		reg := endpoint.NewMemoryRegistry()
		reg.Upsert(ep)
		reg.MarkSynced()
		leader := i == 0
		d, err := New(Options{Registry: reg, Store: st, HTTPClient: NewHTTPClient(egress), SyncInterval: 50 * time.Millisecond,
			IsLeader: func() bool { return leader }, Logger: testr.NewWithOptions(t, testr.Options{Verbosity: 0})})
		if err != nil {
			t.Fatal(err)
		}
		managers = append(managers, d)
		running.Go(func() {
			if err := d.Start(ctx); err != nil {
				t.Errorf("dispatcher %d: %v", i, err)
			}
		})
	}
	const keys, n = 4, 60
	events := keyedEvents("nats", keys, n, rand.New(rand.NewPCG(15, 16)))
	recordEnqueued(t, events...)
	// Batches of 24, to each manager in turn: a batch's events are stored
	// in its order, and would be fanned out by 8 workers of each manager
	// but for the ordered fan-out.
	for i := 0; i < len(events); i += 24 {
		if _, err := managers[i/24%2].Enqueue(t.Context(), events[i:min(i+24, len(events))]); err != nil {
			t.Fatal(err)
		}
	}
	c.waitDelivered(t, 60*time.Second, n, 0, keys)
	c.report(t)
	rc.checkAll(t, events...)
}

// An endpoint switched from PerKey to Unordered delivers what its keys'
// queues still hold, in their order, and new events unordered.
func TestSwitchingPerKeyOffDeliversWhatTheKeysHold(t *testing.T) {
	var mu sync.Mutex
	stuck := true
	c := newOrderChecker(func(key string, _ int) bool {
		mu.Lock()
		defer mu.Unlock()
		return stuck && key == "k0"
	})
	rc := orderedReceiver(t, c)
	h := newHarness(t, "", nil)
	ep := testEndpoint("ordered", rc.URL, perKey)
	h.reg.Upsert(ep)
	events := keyedEvents("switch", 3, 6, rand.New(rand.NewPCG(17, 18)))
	h.enqueue(events...)
	c.waitDelivered(t, 30*time.Second, 6, 1, 3)
	ep.Policy.PerKey, ep.OrderingKey, ep.Generation = false, nil, 2
	h.reg.Upsert(ep)
	syncs := h.d.Syncs()
	testutil.Eventually(t, 10*time.Second, func() error {
		if h.d.Syncs() < syncs+3 {
			return fmt.Errorf("%d syncs", h.d.Syncs()-syncs)
		}
		return nil
	})
	mu.Lock()
	stuck = false
	mu.Unlock()
	c.waitDelivered(t, 30*time.Second, 6, 0, 1)
	c.report(t)
	rc.checkAll(t, events...)
}

// With more keys waiting than lanes may be kept, the keys beyond them wait
// in the stream and are found once lanes are free: every key's events are
// delivered, in order, and the lanes never outnumber the bound.
func TestKeysBeyondTheLaneBoundWaitInTheStream(t *testing.T) {
	defer func(n int) { maxLanes = n }(maxLanes)
	maxLanes = 3
	var mu sync.Mutex
	failing := true
	c := newOrderChecker(func(key string, _ int) bool {
		mu.Lock()
		defer mu.Unlock()
		return failing
	})
	rc := orderedReceiver(t, c)
	h := newHarness(t, "", nil)
	h.reg.Upsert(testEndpoint("ordered", rc.URL, perKey))
	const keys, n = 12, 4
	events := keyedEvents("bound", keys, n, rand.New(rand.NewPCG(19, 20)))
	// Each key's first two events now, the others once lanes free up: a
	// key turned away has its first events in the stream when its later
	// ones are moved, which must not jump them.
	var first, later []Event
	for _, ev := range events {
		var d struct{ N int }
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.N <= 2 {
			first = append(first, ev)
		} else {
			later = append(later, ev)
		}
	}
	h.enqueue(first...)

	worker := func() *endpointWorker {
		h.d.mu.Lock()
		defer h.d.mu.Unlock()
		return h.d.workers[types.NamespacedName{Namespace: "shop", Name: "ordered"}]
	}
	peak := 0
	sample := func() {
		if w := worker(); w != nil {
			if o := w.lanes.Load(); o != nil {
				peak = max(peak, o.laneCount())
			}
		}
	}
	// While every attempt fails, only the first keys have lanes.
	testutil.EventuallyEvery(t, 20*time.Second, 10*time.Millisecond, func() error {
		sample()
		if got := len(rc.uniqueIDs()); got != maxLanes {
			return fmt.Errorf("%d events attempted, want the heads of %d keys", got, maxLanes)
		}
		return nil
	})
	mu.Lock()
	failing = false
	mu.Unlock()
	for i, ev := range later {
		h.enqueue(ev)
		if i%4 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	testutil.EventuallyEvery(t, 60*time.Second, 10*time.Millisecond, func() error {
		sample()
		for k := range keys {
			if got := c.delivered(fmt.Sprintf("k%d", k)); got != n {
				return fmt.Errorf("key k%d: %d of %d delivered", k, got, n)
			}
		}
		return nil
	})
	c.report(t)
	rc.checkAll(t, events...)
	if peak > maxLanes {
		t.Errorf("%d lanes at once, the bound is %d", peak, maxLanes)
	}
}
