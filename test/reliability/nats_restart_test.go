//go:build reliability

package reliability

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// startNATS runs a NATS server with JetStream and a file store in the test
// process, on a fixed loopback port.
func startNATS(t *testing.T, port int, storeDir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "reliability-nats",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		t.Fatal("NATS did not start within 30s")
	}
	return s
}

// TestExternalNATSRestart runs the manager against an external NATS server
// (--nats-url), posts 2,000 events with ids (each with data of its own),
// shuts NATS down for 5 s in the middle of the run and starts a new server
// on the same port and store directory. Every event answered 202 is
// delivered with exactly the content posted; 503s during the outage are
// counted (the producer posts those batches again with the same ids).
func TestExternalNATSRestart(t *testing.T) {
	const (
		total     = 2000
		batchSize = 50
		down      = 5 * time.Second
	)
	_, portStr, _ := net.SplitHostPort(testutil.FreeAddr(t))
	port, _ := strconv.Atoi(portStr)
	storeDir := t.TempDir()
	var nmu sync.Mutex
	ns1 := startNATS(t, port, storeDir)
	current := ns1
	t.Cleanup(func() {
		nmu.Lock()
		defer nmu.Unlock()
		if current != nil {
			current.Shutdown()
			current.WaitForShutdown()
		}
	})

	// A receiver taking 50 ms: with maxInFlight 16 it drains about 320
	// events a second, fewer than are posted, so deliveries are queued and
	// open when NATS goes away.
	ns, token, rc, m := setupCRM(t, 50*time.Millisecond, policy{initialBackoff: 1, maxBackoff: 5}, managerOptions{
		dataDir: t.TempDir(),
		extra:   []string{"--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port)},
	})

	// One producer, a batch every 100 ms (about 4 s of posting without the
	// outage); a 503 is posted again with the same ids every 200 ms.
	p := newProducer(m.IngestAddr, ns, token, rc.ledger)
	start := time.Now()
	var accepted int
	var amu sync.Mutex
	posted := make(chan error, 1)
	go func() {
		for i := 0; i < total; i += batchSize {
			if _, err := p.postBatch(events(idRange("nats", i, batchSize), "")); err != nil {
				posted <- err
				return
			}
			amu.Lock()
			accepted += batchSize
			amu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
		posted <- nil
	}()

	// Mid-run: NATS goes away for a few seconds, then a new server starts
	// on the same port and store directory.
	testutil.EventuallyEvery(t, time.Minute, 10*time.Millisecond, func() error {
		amu.Lock()
		defer amu.Unlock()
		if accepted < total/3 {
			return fmt.Errorf("%d accepted", accepted)
		}
		return nil
	})
	downAt := time.Now()
	nmu.Lock()
	current.Shutdown()
	current.WaitForShutdown()
	current = nil
	nmu.Unlock()
	amu.Lock()
	acceptedAtDown := accepted
	amu.Unlock()
	receivedAtDown := rc.uniqueOK()
	time.Sleep(down)
	ns2 := startNATS(t, port, storeDir)
	nmu.Lock()
	current = ns2
	nmu.Unlock()
	upAt := time.Now()
	readyAgain := make(chan time.Duration, 1)
	go func() {
		for time.Since(upAt) < 2*time.Minute {
			if resp, err := http.Get("http://" + m.ProbeAddr + "/readyz"); err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					readyAgain <- time.Since(upAt)
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		readyAgain <- -1
	}()
	t.Logf("RESULT nats restart: NATS shut down %s after the first post with %d events accepted and %d received (%d queued); a new server was up %s later",
		downAt.Sub(start).Round(time.Millisecond), acceptedAtDown, receivedAtDown, acceptedAtDown-receivedAtDown, upAt.Sub(downAt).Round(time.Millisecond))

	if err := <-posted; err != nil {
		t.Fatal(err)
	}
	postedIn := time.Since(start)
	ids := p.acceptedIDs()
	if len(ids) != total {
		t.Fatalf("%d events answered 202, want %d", len(ids), total)
	}
	testutil.EventuallyEvery(t, 2*time.Minute, 250*time.Millisecond, func() error {
		if miss := missing(rc, ids); len(miss) > 0 {
			return fmt.Errorf("%d acknowledged events not delivered, e.g. %v", len(miss), firstN(miss, 5))
		}
		return nil
	})
	deliveredIn := time.Since(start)
	// How long the endpoint went without a delivery around the outage, and
	// when deliveries resumed after NATS came back.
	var lastBefore, firstAfter time.Time
	for _, x := range rc.exchanges() {
		if x.arrived.Before(upAt) && x.arrived.After(lastBefore) {
			lastBefore = x.arrived
		}
		if x.arrived.After(upAt) && (firstAfter.IsZero() || x.arrived.Before(firstAfter)) {
			firstAfter = x.arrived
		}
	}
	// The first event accepted after NATS came back.
	firstAcceptedAfter := time.Duration(-1)
	p.mu.Lock()
	for _, at := range p.accepted {
		if d := at.Sub(upAt); at.After(downAt) && (firstAcceptedAfter < 0 || d < firstAcceptedAfter) {
			firstAcceptedAfter = d
		}
	}
	p.mu.Unlock()

	// Deliveries interrupted by the outage come back after their ack wait
	// (timeoutSeconds + 10 s): wait for those and a quiet receiver.
	waitSettled(t, rc, upAt, 25*time.Second, "NATS came back")
	rc.checkContent(t, "nats restart", ids)
	oks := rc.okCounts()
	dupIDs, extra := duplicates(oks)
	ok2xx := rc.ok2xx.Load()
	codes := p.codeCounts()
	t.Logf("RESULT nats restart: %d events accepted in %s; answers %v (%d batches posted again); all delivered %s after the first post; %d 2xx answers for %d unique ids: %d duplicates of %d ids, e.g. %v",
		total, postedIn.Round(time.Millisecond), codes, p.retried, deliveredIn.Round(time.Millisecond), ok2xx, len(oks), extra, len(dupIDs), firstN(dupIDs, 10))
	for _, e := range p.firstErrors {
		t.Logf("producer saw: %s", e)
	}
	if codes["503"] == 0 {
		t.Logf("no 503 while NATS was down: nothing was posted during the outage")
	}
	for code := range codes {
		if code != "202" && code != "503" {
			t.Errorf("the producer got %d answers %s: only 202 and 503 are expected", codes[code], code)
		}
	}
	if bad := rc.badSig.Load(); bad != 0 {
		t.Errorf("%d requests failed signature verification", bad)
	}

	var c counters
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for {
		c = statusCounters(t, ns, "crm")
		switch {
		case c.Pending != 0:
			lastErr = fmt.Errorf("eventsPending %d", c.Pending)
		case c.Failed != 0:
			lastErr = fmt.Errorf("eventsFailed %d", c.Failed)
		case c.Delivered < int64(len(oks)):
			lastErr = fmt.Errorf("eventsDelivered %d < %d events delivered", c.Delivered, len(oks))
		case c.Delivered > ok2xx:
			lastErr = fmt.Errorf("eventsDelivered %d > %d 2xx answers", c.Delivered, ok2xx)
		case c.Sent < total:
			lastErr = fmt.Errorf("totalEventsSent %d < %d", c.Sent, total)
		default:
			lastErr = nil
		}
		if lastErr == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("RESULT nats restart status: %s (receiver %d 2xx, %d unique); after NATS came back the manager was ready again in %s and accepted events again in %s, but delivered again only after %s (no delivery from %s after the shutdown until %s after it)",
		c, ok2xx, len(oks), (<-readyAgain).Round(time.Millisecond), firstAcceptedAfter.Round(time.Millisecond),
		firstAfter.Sub(upAt).Round(time.Millisecond), lastBefore.Sub(downAt).Round(time.Millisecond), firstAfter.Sub(downAt).Round(time.Millisecond))
	if lastErr != nil {
		t.Errorf("status: %v (%s)", lastErr, c)
	}

	t.Run("an id accepted before the NATS restart and posted again after it is not delivered again", func(t *testing.T) {
		checkRepostNotRedelivered(t, rc, m, ns, token, idRange("nats", 0, batchSize), "nats restart")
	})
}
