//go:build reliability

package reliability

import (
	"bytes"
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
					ids, key := postWithoutIDs(m.IngestAddr, ns, token, i, batchSize)
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

// postWithoutIDs posts events from..from+n-1 without ids, once, and returns
// the webhook-ids the 202 gave them (none when it was not a 202) and what
// the answer was.
func postWithoutIDs(addr, ns, token string, from, n int) ([]string, string) {
	var b bytes.Buffer
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, `{"type":"message.sent","data":{"messageId":"gc-%05d","sessionId":"s-1","to":"+6281234567890"}}`+"\n", i)
	}
	code, body, err := post(addr, ns, token, "application/x-ndjson", b.Bytes())
	if err != nil {
		return nil, "no-answer"
	}
	if code != http.StatusAccepted {
		return nil, fmt.Sprint(code)
	}
	var res struct {
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil || len(res.Events) != n {
		return nil, "202 with an unreadable body"
	}
	ids := make([]string, n)
	for i, e := range res.Events {
		ids[i] = e.ID
	}
	return ids, "202"
}
