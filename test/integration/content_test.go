package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// ingestClient posts to the ingestion API from many goroutines.
var ingestClient = &http.Client{Timeout: 30 * time.Second}

// request is one post of events: a single JSON event or an NDJSON batch,
// each line with its id or without (then the API makes one).
type request struct {
	events []testutil.Posted
	withID []bool
	single bool
}

// body returns the request's content type and body, and the events as the
// Ledger must see them: without an id where none was posted.
func (rq request) body() (string, []byte, []testutil.Posted) {
	posted := make([]testutil.Posted, len(rq.events))
	var b bytes.Buffer
	for i, ev := range rq.events {
		b.Write(ev.JSON(rq.withID[i]))
		if !rq.single {
			b.WriteByte('\n')
		}
		if !rq.withID[i] {
			ev.ID = ""
		}
		posted[i] = ev
	}
	if rq.single {
		return "application/json", b.Bytes(), posted
	}
	return "application/x-ndjson", b.Bytes(), posted
}

// send posts rq to the ingestion API at addr and, on a 202, records its
// events in ledger with the ids the answer gave. It returns the ids.
func (rq request) send(addr, ns string, ledger *testutil.Ledger) ([]string, error) {
	ct, body, posted := rq.body()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/namespaces/"+ns+"/events", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+ingestToken)
	resp, err := ingestClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("%d events: %d %.300s", len(posted), resp.StatusCode, answer)
	}
	return ledger.Accepted(posted, answer)
}

// alternate returns n flags, true (with an id) for every index i with
// (i+offset) even.
func alternate(n, offset int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = (i+offset)%2 == 0
	}
	return out
}

// requireDistinctData fails t when two posted events have the same type and
// data: a check that could not tell them apart could not fail.
func requireDistinctData(t *testing.T, ledger *testutil.Ledger) {
	t.Helper()
	seen := map[string]string{}
	for _, id := range ledger.IDs() {
		ev, _ := ledger.Get(id)
		var v any
		if err := json.Unmarshal(ev.Data, &v); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		canon, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		key := ev.Type + " " + string(canon)
		if other, ok := seen[key]; ok {
			t.Fatalf("events %s and %s have the same type and data: the content check could not tell them apart", other, id)
		}
		seen[key] = id
	}
}

// refusedFirst reports whether the "main" receiver of
// TestDeliveredContentIsWhatWasPosted answers 503 to the first attempt of
// the event with webhook-id id: about one in four.
func refusedFirst(id string) bool {
	h := fnv.New32a()
	h.Write([]byte(id))
	return h.Sum32()%4 == 0
}

// TestDeliveredContentIsWhatWasPosted posts, through the real manager's
// ingestion API, single JSON events, NDJSON batches of 1, 2, 100 and 1,000
// lines and the single events of 16 concurrent posters, with and without
// ids, every event with data of its own (testutil.VariedEvents: unicode,
// escapes, nested values, a few bytes to a few kilobytes, some with a
// timestamp), to two loopback receivers that check every delivered body
// against what was posted (the content oracle): "main" answers 503 to the
// first attempt of about one event in four, which is retried and must
// carry the same body; "replayed" fails every event for good (maxAttempts
// 1) until a replay (webhooks.wablast.io/replay-since) delivers them all
// again with their original content.
func TestDeliveredContentIsWhatWasPosted(t *testing.T) {
	ns := env.Namespace(t)
	r := startOperator(t, ns, t.TempDir())
	createIngestToken(t, ns)
	ledger := testutil.NewLedger()

	mainRc, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	mainAttempts := map[string]int{}
	mainRc.Respond = func(w http.ResponseWriter, _ *http.Request, d testutil.Delivery) int {
		mu.Lock()
		mainAttempts[d.ID]++
		n := mainAttempts[d.ID]
		mu.Unlock()
		if n == 1 && refusedFirst(d.ID) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return http.StatusServiceUnavailable
		}
		w.WriteHeader(http.StatusOK)
		return http.StatusOK
	}
	mainSrv := httptest.NewServer(mainRc)
	t.Cleanup(mainSrv.Close)

	replayRc, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	failing.Store(true)
	replayedOK := map[string]int{}
	replayRc.Respond = func(w http.ResponseWriter, _ *http.Request, d testutil.Delivery) int {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		mu.Lock()
		replayedOK[d.ID]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	}
	replaySrv := httptest.NewServer(replayRc)
	t.Cleanup(replaySrv.Close)

	createEndpoint(t, ns, "main", mainSrv.URL+"/hooks/main", 5)
	createEndpoint(t, ns, "replayed", replaySrv.URL+"/hooks/replayed", 1)
	waitReady(t, ns, "main")
	waitReady(t, ns, "replayed")
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)

	var addr string
	testutil.Eventually(t, 10*time.Second, func() error {
		if addr = r.op.Ingest.Addr(); addr == "" {
			return fmt.Errorf("ingest not listening yet")
		}
		return nil
	})

	// Single JSON events, every other one without an id.
	for i, ev := range testutil.VariedEvents("single", 20) {
		if _, err := (request{events: []testutil.Posted{ev}, withID: []bool{i%2 == 0}, single: true}).send(addr, ns, ledger); err != nil {
			t.Fatalf("single event %d: %v", i, err)
		}
	}
	// NDJSON batches of 1, 1, 2, 2, 100 and 1,000 lines, lines alternately
	// with and without an id (each size both ways round).
	for b, n := range []int{1, 1, 2, 2, 100, 1000} {
		rq := request{events: testutil.VariedEvents(fmt.Sprintf("batch%d", b), n), withID: alternate(n, b)}
		ids, err := rq.send(addr, ns, ledger)
		if err != nil {
			t.Fatalf("batch of %d: %v", n, err)
		}
		if len(ids) != n {
			t.Fatalf("batch of %d: %d ids", n, len(ids))
		}
	}
	// 16 posters at once, 20 single events each.
	const posters, each = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, posters)
	for g := range posters {
		wg.Go(func() {
			for i, ev := range testutil.VariedEvents(fmt.Sprintf("poster%d", g), each) {
				if _, err := (request{events: []testutil.Posted{ev}, withID: []bool{(g+i)%2 == 0}, single: true}).send(addr, ns, ledger); err != nil {
					errs <- fmt.Errorf("poster %d event %d: %w", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := 20 + 1 + 1 + 2 + 2 + 100 + 1000 + posters*each
	ids := ledger.IDs()
	if len(ids) != total {
		t.Fatalf("the ledger holds %d events, want %d", len(ids), total)
	}
	requireDistinctData(t, ledger)

	// main: every event, the refused ones retried, each copy the same.
	testutil.Eventually(t, 2*time.Minute, func() error {
		if n := mainRc.Unique(); n != total {
			return fmt.Errorf("main received %d of %d events", n, total)
		}
		st := getWHC(t, ns, "main").Status
		if st.EventsDelivered != int64(total) || st.EventsPending != 0 {
			return fmt.Errorf("main: delivered %d pending %d failed %d, want %d delivered", st.EventsDelivered, st.EventsPending, st.EventsFailed, total)
		}
		return nil
	})
	reqs := mainRc.Requests()
	refused := 0
	for _, id := range ids {
		if refusedFirst(id) {
			refused++
			if reqs[id] < 2 {
				t.Errorf("main: %s was answered 503 and received %d times", id, reqs[id])
			}
		}
	}
	if refused == 0 {
		t.Fatal("no event was refused at its first attempt")
	}
	if err := mainRc.CheckAll(ids); err != nil {
		t.Errorf("main: %v", err)
	}
	if st := getWHC(t, ns, "main").Status; st.EventsFailed != 0 {
		t.Errorf("main: %d events failed", st.EventsFailed)
	}
	t.Logf("main: %d events, %d of them refused once and retried, every body what was posted", total, refused)

	// replayed: every event failed for good, then replayed.
	testutil.Eventually(t, 2*time.Minute, func() error {
		st := getWHC(t, ns, "replayed").Status
		if st.EventsFailed != int64(total) || st.EventsPending != 0 {
			return fmt.Errorf("replayed: failed %d pending %d, want %d failed", st.EventsFailed, st.EventsPending, total)
		}
		return nil
	})
	if err := replayRc.CheckAll(ids); err != nil {
		t.Errorf("replayed, the failed attempts: %v", err)
	}
	failing.Store(false)
	annotate(t, ns, "replayed", webhooksv1alpha1.AnnotationReplaySince, since)
	testutil.Eventually(t, time.Minute, func() error {
		lr := getWHC(t, ns, "replayed").Status.LastReplay
		if lr == nil || lr.RequestedAt != since || lr.EventsRequeued != int64(total) {
			return fmt.Errorf("lastReplay %+v, want %d requeued", lr, total)
		}
		return nil
	})
	testutil.Eventually(t, 2*time.Minute, func() error {
		mu.Lock()
		n := len(replayedOK)
		mu.Unlock()
		if n != total {
			return fmt.Errorf("replayed: %d of %d events delivered by the replay", n, total)
		}
		if st := getWHC(t, ns, "replayed").Status; st.EventsDelivered != int64(total) {
			return fmt.Errorf("replayed: delivered %d, want %d", st.EventsDelivered, total)
		}
		return nil
	})
	// The replay's bodies are the failed attempts' bodies (Check refuses a
	// copy that differs) and what was posted.
	if err := replayRc.CheckAll(ids); err != nil {
		t.Errorf("replayed: %v", err)
	}
	mu.Lock()
	again := 0
	for _, n := range replayedOK {
		again += n - 1
	}
	mu.Unlock()
	t.Logf("replayed: %d events failed for good, then replayed with their original content (%d delivered more than once: at-least-once)", total, again)
}
