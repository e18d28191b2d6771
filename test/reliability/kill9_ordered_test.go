//go:build reliability

package reliability

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestKill9KeepsEachKeysOrder is the kill -9 test of ordered delivery
// (spec.delivery.ordering: PerKey, the default ordering key, which is
// data.messageId here). 200 keys get 15 to 20 events each; a key's event
// n+1 is posted only once its event n was answered 202, so each key's
// acceptance order is its events' order. The receiver answers 500 to about
// a fifth of the requests, at random, and checks every request against the
// last event it answered 2xx for the same key: event n may only be asked
// for after event n-1 (its first delivery) or n (a retry, or an
// at-least-once repeat of a 2xx the manager did not record). The manager
// is SIGKILLed once a third of the events has reached the receiver, while
// events are still being posted, and restarted on the same data directory
// and ports; the producers post again, with the same ids, whatever was not
// answered 202. In the end every event answered 202 must have arrived with
// exactly the content posted, and no key may have been delivered out of
// order.
func TestKill9KeepsEachKeysOrder(t *testing.T) {
	const (
		keys      = 200
		producers = 8 // each owns the keys j with j%producers == its index
		// roundPause spaces a producer's rounds (event n of each of its
		// keys), so that posting lasts about 15 s and the kill falls while
		// it goes on.
		roundPause = 700 * time.Millisecond
	)
	perKey := func(j int) int { return 15 + j%6 } // 15..20 events
	total, rounds := 0, 0
	for j := range keys {
		total += perKey(j)
		rounds = max(rounds, perKey(j))
	}
	killAfter := total / 3

	start := time.Now()
	ns := env.Namespace(t)
	token := randomToken()
	createIngestToken(t, ns, token)
	oc := &orderCheck{last: map[string]int{}}
	rc := newReceiver(t, testutil.NewLedger(), oc.respond)
	createEndpoint(t, ns, "crm", rc.URL+"/hooks/wa", policy{
		maxInFlight: 16, initialBackoff: 1, maxBackoff: 2, maxAttempts: 20,
		ordering: webhooksv1alpha1.OrderingPerKey, // the default ordering key
	})
	m := startManager(t, managerOptions{dataDir: t.TempDir()})
	m.WaitReady(90 * time.Second)
	waitWHCReady(t, ns, "crm")
	if got := getWHC(t, ns, "crm").Spec.Delivery.Ordering; got != webhooksv1alpha1.OrderingPerKey {
		t.Fatalf("spec.delivery.ordering is %q", got)
	}

	// Even producers post NDJSON batches (event n of each of their keys,
	// one line per key), odd ones post each event on its own as one JSON
	// event; both post a key's event n+1 only after its event n was
	// answered 202, and post again with the same ids until answered 202.
	batches := newProducer(m.IngestAddr, ns, token, rc.ledger)
	singles := newProducer(m.IngestAddr, ns, token, rc.ledger)
	singles.single = true
	postStart := time.Now()
	posted := make(chan error, 1)
	go func() {
		var wg sync.WaitGroup
		errs := make(chan error, producers)
		for w := range producers {
			wg.Go(func() {
				p := batches
				if w%2 == 1 {
					p = singles
				}
				for n := 1; n <= rounds; n++ {
					var evs []testutil.Posted
					for j := w; j < keys; j += producers {
						if n <= perKey(j) {
							evs = append(evs, orderedEvent(j, n))
						}
					}
					if p.single {
						for _, ev := range evs {
							if _, err := p.postBatch([]testutil.Posted{ev}); err != nil {
								errs <- err
								return
							}
						}
					} else if len(evs) > 0 {
						if _, err := p.postBatch(evs); err != nil {
							errs <- err
							return
						}
					}
					time.Sleep(roundPause)
				}
			})
		}
		wg.Wait()
		close(errs)
		posted <- <-errs
	}()
	acceptedIDs := func() []string {
		ids := append(batches.acceptedIDs(), singles.acceptedIDs()...)
		slices.Sort(ids)
		return ids
	}

	waitReceived(t, rc, killAfter)
	killAt := time.Now()
	m.Kill9()
	acceptedAtKill, receivedAtKill := len(acceptedIDs()), rc.uniqueOK()
	t.Logf("RESULT kill9 ordered at kill: kill -9 %s after the first post: %d of %d events answered 202, %d received",
		killAt.Sub(postStart).Round(time.Millisecond), acceptedAtKill, total, receivedAtKill)
	if acceptedAtKill >= total {
		t.Errorf("every event was answered 202 before the kill: the kill did not fall while events were being posted")
	}
	m.Start()
	m.WaitReady(90 * time.Second)
	readyAt := time.Now()
	t.Logf("RESULT kill9 ordered restart: ready %s after the kill", readyAt.Sub(killAt).Round(time.Millisecond))

	if err := <-posted; err != nil {
		t.Fatal(err)
	}
	postedIn := time.Since(postStart)
	ids := acceptedIDs()
	if len(ids) != total {
		t.Fatalf("%d events answered 202, want %d", len(ids), total)
	}

	// Every event answered 202 arrives.
	testutil.EventuallyEvery(t, 2*time.Minute, 250*time.Millisecond, func() error {
		if miss := missing(rc, ids); len(miss) > 0 {
			return fmt.Errorf("%d acknowledged events not delivered, e.g. %v (received %d unique)", len(miss), firstN(miss, 5), rc.uniqueOK())
		}
		return nil
	})
	deliveredIn := time.Since(postStart)
	if bad := rc.badSig.Load(); bad != 0 {
		t.Errorf("%d requests failed signature verification", bad)
	}
	// Deliveries whose messages were held at the kill come back after their
	// ack wait (timeoutSeconds + 10 s, 30 s for the fan-out): wait for
	// those, so that a late repeat out of order is seen too.
	waitSettled(t, rc, readyAt, 35*time.Second, "the restart")
	rc.checkContent(t, "kill9 ordered", ids)

	// Each key ends at its last event: the last 2xx answered for it.
	violations, nViolations, unparsed := oc.result()
	last := oc.lastAnswered()
	var short []string
	for j := range keys {
		if k := fmt.Sprintf("k%d", j); last[k] != perKey(j) {
			short = append(short, fmt.Sprintf("%s: last 2xx for event %d of %d", k, last[k], perKey(j)))
		}
	}
	if len(short) > 0 {
		t.Errorf("%d keys did not end at their last event: %v", len(short), firstN(short, 10))
	}
	for _, u := range unparsed {
		t.Errorf("a delivered body the order check could not read: %s", u)
	}
	for _, v := range violations { // the first 10
		t.Errorf("order violation: %s", v.describe(killAt, readyAt))
	}
	if nViolations > 0 {
		t.Errorf("%d order violations in all (the first %d above)", nViolations, min(nViolations, 10))
	}

	oks := rc.okCounts()
	dupIDs, extra := duplicates(oks)
	statuses := rc.statusCounts()
	codes := batches.codeCounts()
	for k, v := range singles.codeCounts() {
		codes[k] += v
	}
	t.Logf("RESULT kill9 ordered: %d events of %d keys accepted in %s (%d posts again; answers %v), all delivered %s after the first post; receiver: %d requests (%d answered 500, answers %v), %d 2xx for %d unique ids: %d duplicate deliveries of %d ids, e.g. %v; %d order violations; the test took %s",
		total, keys, postedIn.Round(time.Millisecond), batches.retried+singles.retried, codes, deliveredIn.Round(time.Millisecond),
		rc.total.Load(), statuses[http.StatusInternalServerError], statuses, rc.ok2xx.Load(), len(oks), extra, len(dupIDs), firstN(dupIDs, 10),
		nViolations, time.Since(start).Round(time.Millisecond))
	for _, e := range append(batches.firstErrors, singles.firstErrors...) {
		t.Logf("producer saw: %s", e)
	}
	t.Logf("RESULT kill9 ordered status: %s", statusCounters(t, ns, "crm"))
}

// orderedEvent is event n (from 1) of key j: a message.sent whose
// messageId, the default ordering key, is k<j>, and whose n is its place
// in the key's order. Its content depends on j and n alone, so a re-post
// carries the same.
func orderedEvent(j, n int) testutil.Posted {
	notes := []string{"", "plain", "Halo 🚚 — terima kasih!", "quote \" backslash \\ <b>&</b>", "line \u2028 sep"}
	data := map[string]any{
		"messageId": fmt.Sprintf("k%d", j),
		"n":         n,
		"sessionId": fmt.Sprintf("s-%d", j%7),
		"to":        fmt.Sprintf("+628%09d", j*1000+n),
		"note":      notes[(j+n)%len(notes)] + strings.Repeat("·", (j*n)%50),
	}
	if n%4 == 0 {
		data["campaignId"] = fmt.Sprintf("c-%d", j%3)
	}
	b, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	ev := testutil.Posted{ID: fmt.Sprintf("ord-k%03d-%02d", j, n), Type: "message.sent", Data: b}
	if n%3 == 1 {
		ev.Timestamp = time.Date(2026, 11, 28, 10, 15, 2, 0, time.FixedZone("", 7*3600)).
			Add(time.Duration(j*100+n) * time.Millisecond).Format(time.RFC3339Nano)
	}
	return ev
}

// orderCheck answers the order test's requests: 500 to about one in five,
// at random, 2xx otherwise, and checks each against the last event
// answered 2xx for its key.
type orderCheck struct {
	mu   sync.Mutex
	last map[string]int // the n of the last event answered 2xx, by key
	// violations are the first requests out of order, nViolations all of them.
	violations  []orderViolation
	nViolations int
	unparsed    []string
}

type orderViolation struct {
	at       time.Time
	id, key  string
	n, last  int
	answered int
}

func (v orderViolation) describe(killAt, readyAt time.Time) string {
	when := fmt.Sprintf("%s before the kill", killAt.Sub(v.at).Round(time.Millisecond))
	if v.at.After(readyAt) {
		when = fmt.Sprintf("%s after the restart was ready", v.at.Sub(readyAt).Round(time.Millisecond))
	} else if v.at.After(killAt) {
		when = fmt.Sprintf("%s after the kill, before the restart was ready", v.at.Sub(killAt).Round(time.Millisecond))
	}
	return fmt.Sprintf("key %s: event %d (webhook-id %s) requested %s, when the last 2xx for the key was for event %d (answered %d)",
		v.key, v.n, v.id, when, v.last, v.answered)
}

func (o *orderCheck) respond(w http.ResponseWriter, r *http.Request) int {
	// A millisecond or two, like a real receiver, so that requests are open
	// when the manager dies.
	time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
	body, err := io.ReadAll(r.Body)
	var msg struct {
		Type string `json:"type"`
		Data struct {
			MessageID string `json:"messageId"`
			N         int    `json:"n"`
		} `json:"data"`
	}
	if err == nil {
		err = json.Unmarshal(body, &msg)
	}
	id := r.Header.Get("webhook-id")
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil || msg.Data.MessageID == "" || msg.Data.N < 1 {
		if len(o.unparsed) < 10 {
			o.unparsed = append(o.unparsed, fmt.Sprintf("webhook-id %s: %v: %.200s", id, err, body))
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
	key, n := msg.Data.MessageID, msg.Data.N
	last := o.last[key]
	code := http.StatusOK
	switch {
	case rand.IntN(5) == 0:
		code = http.StatusInternalServerError
	case rand.IntN(4) == 0:
		code = http.StatusNoContent
	}
	if n != last+1 && n != last {
		o.nViolations++
		if len(o.violations) < 10 {
			o.violations = append(o.violations, orderViolation{at: time.Now(), id: id, key: key, n: n, last: last, answered: code})
		}
	}
	if code < 300 {
		o.last[key] = n
	}
	w.WriteHeader(code)
	return code
}

func (o *orderCheck) result() ([]orderViolation, int, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.violations), o.nViolations, slices.Clone(o.unparsed)
}

func (o *orderCheck) lastAnswered() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]int, len(o.last))
	for k, v := range o.last {
		out[k] = v
	}
	return out
}
