//go:build reliability

package reliability

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestKill9WithoutIDsLosesNothingAcknowledged is the kill -9 test for
// events posted without an id. Their deliveries are stored at ingest, and
// those to one endpoint that arrive together share one message (group
// commit), so the kill falls while messages of many deliveries are being
// worked on: every event answered 202 must still arrive, and the counters
// must end at the number of distinct events delivered.
//
// Without ids a batch posted again is a new batch, so a batch not answered
// 202 is not posted again; its events may or may not have been stored
// before the kill, and those that were arrive and are counted like the rest.
// Every event has data of its own; every delivered body must be exactly
// what was posted: for a batch answered 202, the event posted under the id
// the answer gave; for one not answered, the posted event its data names
// (by its sessionId), each at most under one webhook-id.
func TestKill9WithoutIDsLosesNothingAcknowledged(t *testing.T) {
	const (
		total     = 6000
		batchSize = 100
		killAfter = 2000
		producers = 4
	)
	// 10 ms a request with maxInFlight 16 drains about 1,600 events a
	// second, less than the producers post, so a backlog of stored messages
	// builds up and the kill falls while several are being worked on.
	ns, token, rc, m := setupCRM(t, 10*time.Millisecond, policy{}, managerOptions{dataDir: t.TempDir()})

	un := &unanswered{bySession: map[string]testutil.Posted{}}
	rc.oracle.Expect = un.expect(rc.oracle)
	var mu sync.Mutex
	accepted := map[string]bool{} // webhook-ids answered 202
	answers := map[string]int{}
	start := time.Now()
	posted := make(chan struct{})
	go func() {
		defer close(posted)
		var wg sync.WaitGroup
		for w := range producers {
			wg.Go(func() {
				for i := w * batchSize; i < total; i += producers * batchSize {
					ids, key := postWithoutIDs(m.IngestAddr, ns, token, rc.ledger, un, i, batchSize)
					mu.Lock()
					answers[key]++
					for _, id := range ids {
						accepted[id] = true
					}
					mu.Unlock()
					time.Sleep(200 * time.Millisecond)
				}
			})
		}
		wg.Wait()
	}()

	waitReceived(t, rc, killAfter)
	killAt := time.Now()
	m.Kill9()
	mu.Lock()
	acceptedAtKill := len(accepted)
	mu.Unlock()
	t.Logf("RESULT kill9 without ids at kill: kill -9 %s after the first post: %d events answered 202, %d received",
		killAt.Sub(start).Round(time.Millisecond), acceptedAtKill, rc.uniqueOK())
	m.Start()
	m.WaitReady(90 * time.Second)
	readyAt := time.Now()
	<-posted

	mu.Lock()
	ids := make([]string, 0, len(accepted))
	for id := range accepted {
		ids = append(ids, id)
	}
	mu.Unlock()
	slices.Sort(ids)
	if len(ids) < total/2 {
		t.Fatalf("only %d of %d events answered 202 (answers %v)", len(ids), total, answers)
	}
	testutil.EventuallyEvery(t, 3*time.Minute, 250*time.Millisecond, func() error {
		if miss := missing(rc, ids); len(miss) > 0 {
			return fmt.Errorf("%d events answered 202 not delivered, e.g. %v (received %d unique)", len(miss), firstN(miss, 5), rc.uniqueOK())
		}
		return nil
	})
	if bad := rc.badSig.Load(); bad != 0 {
		t.Errorf("%d requests failed signature verification", bad)
	}
	// Messages held at the kill come back after the ack wait; then the
	// receiver goes quiet.
	waitSettled(t, rc, readyAt, 15*time.Second, "the restart")
	rc.checkContent(t, "kill9 without ids", ids)
	if dups := un.deliveredTwice(rc); len(dups) > 0 {
		t.Errorf("%d events of batches not answered 202 (posted once) were delivered under more than one webhook-id, e.g. %v", len(dups), firstN(dups, 5))
	}
	oks := rc.okCounts()
	dupIDs, extra := duplicates(oks)
	unacknowledged := 0 // events delivered that no 202 announced
	for id := range oks {
		if !accepted[id] {
			unacknowledged++
		}
	}
	t.Logf("RESULT kill9 without ids: %d events answered 202 (answers %v), all delivered; receiver: %d 2xx answers for %d unique ids (%d of them from batches whose answer the kill lost); %d duplicate deliveries of %d ids",
		len(ids), answers, rc.ok2xx.Load(), len(oks), unacknowledged, extra, len(dupIDs))

	var c counters
	var problems []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		c = statusCounters(t, ns, "crm")
		problems = nil
		if c.Delivered != int64(len(oks)) || c.Sent != int64(len(oks)) {
			problems = append(problems, fmt.Sprintf("eventsDelivered %d and totalEventsSent %d, want both exactly the %d distinct events delivered", c.Delivered, c.Sent, len(oks)))
		}
		if c.Pending != 0 || c.Failed != 0 {
			problems = append(problems, fmt.Sprintf("eventsPending %d, eventsFailed %d, want 0", c.Pending, c.Failed))
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("RESULT kill9 without ids status: %s", c)
	for _, p := range problems {
		t.Error(p)
	}
}

// postWithoutIDs posts events from..from+n-1 (each with data of its own)
// without ids, once, and returns the webhook-ids the 202 gave them (none
// when it was not a 202) and what the answer was. A 202 records the events
// in ledger; the events of any other answer go to un.
func postWithoutIDs(addr, ns, token string, ledger *testutil.Ledger, un *unanswered, from, n int) ([]string, string) {
	evs := events(idRange("gc", from, n), "")
	ids, code, _, err := postEvents(addr, ns, token, ledger, evs, false, false)
	switch {
	case err != nil && code == http.StatusAccepted:
		un.add(evs)
		return nil, "202 with a body that does not match the batch: " + err.Error()
	case err != nil:
		un.add(evs)
		return nil, "no-answer"
	case code != http.StatusAccepted:
		un.add(evs)
		return nil, fmt.Sprint(code)
	}
	return ids, "202"
}

// unanswered holds the events of batches posted without ids that were not
// answered 202: the kill may have stored them, and then they are delivered
// under ids nobody was told. They are found by their data's sessionId,
// which VariedEvent makes unique.
type unanswered struct {
	mu        sync.Mutex
	bySession map[string]testutil.Posted
}

func (u *unanswered) add(evs []testutil.Posted) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, ev := range evs {
		u.bySession[sessionID(ev.Data)] = ev
	}
}

// expect is the oracle's Expect: the unanswered event whose sessionId the
// body delivered under id names.
func (u *unanswered) expect(oracle *testutil.Receiver) func(id string) (testutil.Posted, bool) {
	return func(id string) (testutil.Posted, bool) {
		body, ok := oracle.Body(id)
		if !ok {
			return testutil.Posted{}, false
		}
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &env) != nil {
			return testutil.Posted{}, false
		}
		u.mu.Lock()
		defer u.mu.Unlock()
		ev, ok := u.bySession[sessionID(env.Data)]
		return ev, ok
	}
}

// deliveredTwice returns the sessionIds of unanswered events that arrived
// under more than one webhook-id.
func (u *unanswered) deliveredTwice(rc *receiver) []string {
	seen := map[string][]string{}
	for id := range rc.requestCounts() {
		if _, ok := rc.ledger.Get(id); ok {
			continue
		}
		body, _ := rc.oracle.Body(id)
		var env struct {
			Data json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(body, &env)
		s := sessionID(env.Data)
		seen[s] = append(seen[s], id)
	}
	var out []string
	for s, ids := range seen {
		if len(ids) > 1 {
			out = append(out, fmt.Sprintf("%s as %v", s, ids))
		}
	}
	slices.Sort(out)
	return out
}

func sessionID(data []byte) string {
	var d struct {
		SessionID string `json:"sessionId"`
	}
	_ = json.Unmarshal(data, &d)
	return d.SessionID
}
