//go:build scaleout

package scaleout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

const (
	// orderedKeys keys of orderedPerKey events each: event n of key k is
	// message.sent with data {"messageId": "k<j>", "n": n, ...}.
	orderedKeys   = 100
	orderedPerKey = 15
	orderedTotal  = orderedKeys * orderedPerKey
	// orderedProducers post, each for keys of its own, one event at a time.
	orderedProducers = 20
	// orderedFailRate of the requests are answered 500.
	orderedFailRate = 0.2
	// leaderElectionID is the manager's Lease (cmd/manager).
	leaderElectionID = "webhook-operator.webhooks.wablast.io"
)

// orderedEvent returns event n (1-based) of key j.
func orderedEvent(j, n int) testutil.Posted {
	data := fmt.Sprintf(`{"messageId":"k%d","n":%d,"sessionId":"s%d","to":"+6281234567890","note":"event %d of key k%d"}`, j, n, j%7, n, j)
	return testutil.Posted{ID: fmt.Sprintf("ord-k%d-%d", j, n), Type: catalog.MessageSent, Data: json.RawMessage(data)}
}

// orderReceiver verifies every request (signature and content, through the
// content oracle) and checks the order per key: a request for event n of a
// key is valid only if the last event of the key answered 2xx was n-1 or n.
// It answers 500 to about orderedFailRate of the requests, at random.
type orderReceiver struct {
	*httptest.Server
	oracle *testutil.Receiver

	mu         sync.Mutex
	last       map[string]int // key -> last n answered 2xx
	delivered  map[string]bool
	requests   int
	failed     int
	duplicates int // 2xx answers to an event already answered 2xx
	violations []string
	lastAt     time.Time // when the last new event was answered 2xx
	bad        int       // requests that failed verification or did not parse
	badErr     string
	// timeline has every request of a key: event, answer, when (since t0).
	timeline map[string][]string
	t0       time.Time
}

func newOrderReceiver(t *testing.T, ledger *testutil.Ledger) *orderReceiver {
	oracle, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	rc := &orderReceiver{oracle: oracle, last: map[string]int{}, delivered: map[string]bool{}, timeline: map[string][]string{}, t0: time.Now()}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *orderReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var d testutil.Delivery
	if err == nil {
		d, err = rc.oracle.Record(r.Header, r.URL.Path, body)
	}
	var ev struct {
		Data struct {
			MessageID string `json:"messageId"`
			N         int    `json:"n"`
		} `json:"data"`
	}
	if err == nil {
		err = json.Unmarshal(d.Body, &ev)
	}
	if err == nil && (ev.Data.MessageID == "" || ev.Data.N < 1) {
		err = fmt.Errorf("no messageId and n in %s", d.Body)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	if err != nil {
		rc.bad++
		if rc.badErr == "" {
			rc.badErr = err.Error()
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	key, n := ev.Data.MessageID, ev.Data.N
	// The answer is decided, and the key's state updated, before the
	// operator can read it: the next request of the key can only be made
	// after this one was answered.
	if last := rc.last[key]; last != n-1 && last != n {
		rc.violations = append(rc.violations, fmt.Sprintf("%s: a request for event %d (webhook-id %s) when the last answered 2xx was %d", key, n, d.ID, last))
	}
	if rand.Float64() < orderedFailRate {
		rc.failed++
		rc.timeline[key] = append(rc.timeline[key], fmt.Sprintf("%d:500@%.2fs", n, time.Since(rc.t0).Seconds()))
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	rc.timeline[key] = append(rc.timeline[key], fmt.Sprintf("%d:204@%.2fs", n, time.Since(rc.t0).Seconds()))
	if rc.delivered[d.ID] {
		rc.duplicates++
	} else {
		rc.delivered[d.ID] = true
		rc.lastAt = time.Now()
	}
	if n > rc.last[key] {
		rc.last[key] = n
	}
	w.WriteHeader(http.StatusNoContent)
}

// done returns how many distinct events were answered 2xx.
func (rc *orderReceiver) done() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.delivered)
}

// startNATS starts one in-process JetStream server and returns its URL.
func startNATS(t *testing.T) string {
	t.Helper()
	port := testutil.FreePort(t)
	s, err := server.NewServer(&server.Options{
		ServerName: "n0",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(s.Shutdown)
	return fmt.Sprintf("nats://127.0.0.1:%d", port)
}

// leaderOf returns the index of the one replica whose metrics say it holds
// the lease (leader_election_master_status 1), skipping dead ones.
func leaderOf(replicas []*testutil.ManagerProcess, dead []bool) (int, error) {
	leader := -1
	for i, r := range replicas {
		if dead[i] {
			continue
		}
		v, err := r.MetricSum("leader_election_master_status")
		if err != nil {
			return -1, fmt.Errorf("replica %d: %w", i, err)
		}
		if v == 1 {
			if leader >= 0 {
				return -1, fmt.Errorf("replicas %d and %d both say they lead", leader, i)
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1, errors.New("no replica leads yet")
	}
	return leader, nil
}

// TestPerKeyOrderWithThreeReplicas runs three managers with leader election
// on one NATS server (in-process) and a PerKey endpoint whose receiver fails a fifth of
// the requests at random; producers post each key's events one after the
// other over the three replicas, the leader (the only replica delivering
// PerKey endpoints) is killed with SIGKILL a third of the way through, and
// every event must arrive, with the content posted, and no request of a key
// may come before the previous event of the key was answered 2xx.
func TestPerKeyOrderWithThreeReplicas(t *testing.T) {
	started := time.Now()
	root := testutil.RepoRoot()
	managerBin := filepath.Join(root, "bin", "manager")
	if _, err := os.Stat(managerBin); err != nil {
		t.Fatal("bin/manager is missing: run 'make build'")
	}
	env, err := testutil.StartEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Stop) // after the managers, which are stopped first
	ctx := context.Background()
	natsURL := startNATS(t)

	ns := env.Namespace(t)
	ledger := testutil.NewLedger()
	rc := newOrderReceiver(t, ledger)
	objs := []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sig"}, StringData: map[string]string{"secret": secret}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest", Labels: map[string]string{"webhooks.wablast.io/ingest-token": "true"}}, StringData: map[string]string{"token": token}},
		&webhooksv1alpha1.WebhookConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ordered"},
			Spec: webhooksv1alpha1.WebhookConfigSpec{
				URL: rc.URL, SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: "sig"},
				Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
				Delivery: &webhooksv1alpha1.DeliveryPolicy{
					Ordering:              webhooksv1alpha1.OrderingPerKey, // the default key: data.messageId
					MaxInFlight:           8,
					InitialBackoffSeconds: 1,
					MaxBackoffSeconds:     2,
					MaxAttempts:           20,
				},
			},
		},
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	replicas := make([]*testutil.ManagerProcess, 3)
	var wg sync.WaitGroup
	for i := range replicas {
		replicas[i] = testutil.StartManager(t, testutil.ManagerOptions{
			Bin: managerBin,
			Args: []string{
				"--kubeconfig", env.Kubeconfig,
				"--nats-url", natsURL,
				"--leader-elect", "--leader-election-namespace", ns,
				"--egress-allow-cidrs", "127.0.0.0/8",
				"--status-flush-interval", "1s",
			},
			Metrics:   true,
			LogPath:   filepath.Join(logDir(t), fmt.Sprintf("ordered-manager-%d.log", i)),
			TailLines: 40,
		})
	}
	for _, r := range replicas {
		wg.Go(func() { r.WaitReady(60 * time.Second) })
	}
	wg.Wait()
	waitWHCReady(t, env.Client, ns, "ordered")

	// The leader: the replica whose metrics say it holds the lease, and
	// the Lease's holder, logged.
	var dead [3]atomic.Bool
	deadNow := func() []bool { return []bool{dead[0].Load(), dead[1].Load(), dead[2].Load()} }
	leader := -1
	testutil.Eventually(t, 60*time.Second, func() (err error) {
		leader, err = leaderOf(replicas, deadNow())
		return err
	})
	var lease coordinationv1.Lease
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: leaderElectionID}, &lease); err != nil {
		t.Fatalf("reading the leader election Lease: %v", err)
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	t.Logf("replica %d (pid %d) leads; the Lease is held by %q", leader, replicas[leader].Pid(), holder)

	// Producers: producer p owns keys p, p+orderedProducers, ... and posts
	// event n+1 of a key only after event n was answered 202, each post to
	// the next live replica (round robin); a failed post is made again with
	// the same id. Posting is paced so that it goes on after the kill.
	var next atomic.Uint64
	var lastPost atomic.Int64 // when the last 202 came, UnixNano
	var journalMu sync.Mutex
	journal := map[string][]string{} // event id -> what each post of it got
	note := func(id string, i int, what string) {
		journalMu.Lock()
		journal[id] = append(journal[id], fmt.Sprintf("replica %d %s@%.2fs", i, what, time.Since(rc.t0).Seconds()))
		journalMu.Unlock()
	}
	var postStats struct {
		sync.Mutex
		requests, refused, errors int
		slowest                   time.Duration
		slowestID                 string
	}
	post := func(ev testutil.Posted) error {
		body := ev.JSON(true)
		began := time.Now()
		defer func() {
			postStats.Lock()
			if d := time.Since(began); d > postStats.slowest {
				postStats.slowest, postStats.slowestID = d, ev.ID
			}
			postStats.Unlock()
		}()
		var lastErr error
		for range 100 {
			i := int(next.Add(1) % 3)
			if dead[i].Load() {
				continue
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+replicas[i].IngestAddr+"/v1/namespaces/"+ns+"/events", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			postStats.Lock()
			postStats.requests++
			if err != nil {
				postStats.errors++
			} else if resp.StatusCode != http.StatusAccepted {
				postStats.refused++
			}
			postStats.Unlock()
			if err != nil {
				note(ev.ID, i, "error")
				lastErr = err
				time.Sleep(100 * time.Millisecond)
				continue
			}
			answer, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			note(ev.ID, i, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(answer)))
			if resp.StatusCode != http.StatusAccepted {
				lastErr = fmt.Errorf("replica %d answered %d: %s", i, resp.StatusCode, answer)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			lastPost.Store(time.Now().UnixNano())
			_, err = ledger.Accepted([]testutil.Posted{ev}, answer)
			return err
		}
		return fmt.Errorf("%s never accepted: %w", ev.ID, lastErr)
	}
	var posted sync.WaitGroup
	var postErrs sync.Map
	var postedN atomic.Int64
	for p := range orderedProducers {
		posted.Go(func() {
			for n := 1; n <= orderedPerKey; n++ {
				for j := p; j < orderedKeys; j += orderedProducers {
					if err := post(orderedEvent(j, n)); err != nil {
						postErrs.Store(p, err)
						return
					}
					postedN.Add(1)
					time.Sleep(time.Duration(60+rand.IntN(40)) * time.Millisecond)
				}
			}
		})
	}

	// Kill the leader once a third of the events arrived.
	testutil.EventuallyEvery(t, 3*time.Minute, 50*time.Millisecond, func() error {
		if n := rc.done(); n < orderedTotal/3 {
			return fmt.Errorf("%d of %d events delivered", n, orderedTotal)
		}
		return nil
	})
	if a, err := replicas[leader].MetricSum("wablast_webhook_delivery_attempts_total"); err == nil {
		t.Logf("before the kill: the leader made %.0f delivery attempts", a)
	}
	for i := range replicas {
		if i == leader {
			continue
		}
		if a, err := replicas[i].MetricSum("wablast_webhook_delivery_attempts_total"); err == nil && a != 0 {
			t.Errorf("replica %d, not the leader, made %.0f delivery attempts to a PerKey endpoint", i, a)
		}
	}
	dead[leader].Store(true)
	replicas[leader].Kill9()
	killedAt := time.Now()
	atKill, postedAtKill := rc.done(), postedN.Load()
	t.Logf("killed the leader, replica %d, at %.2f s (the receiver's clock) with %d of %d events delivered and %d posted", leader, killedAt.Sub(rc.t0).Seconds(), atKill, orderedTotal, postedAtKill)

	// A new leader among the survivors.
	newLeader := -1
	testutil.EventuallyEvery(t, 90*time.Second, 200*time.Millisecond, func() (err error) {
		newLeader, err = leaderOf(replicas, deadNow())
		return err
	})
	t.Logf("replica %d leads %.1f s after the kill", newLeader, time.Since(killedAt).Seconds())

	posted.Wait()
	producersFailed := false
	postErrs.Range(func(p, err any) bool {
		t.Errorf("producer %v: %v", p, err)
		producersFailed = true
		return true
	})
	if producersFailed {
		t.FailNow()
	}
	postStats.Lock()
	t.Logf("all %d events posted %.1f s after the kill (%d after it) in %d requests: %d refused, %d failed (connection); the slowest took %.1f s (%s)",
		orderedTotal, time.Unix(0, lastPost.Load()).Sub(killedAt).Seconds(), orderedTotal-int(postedAtKill), postStats.requests, postStats.refused, postStats.errors, postStats.slowest.Seconds(), postStats.slowestID)
	postStats.Unlock()

	// Everything arrives.
	stall := watchOrdered(t, rc, natsURL)
	testutil.EventuallyEvery(t, 3*time.Minute, 100*time.Millisecond, func() error {
		if n := rc.done(); n != orderedTotal {
			return fmt.Errorf("%d of %d events delivered", n, orderedTotal)
		}
		return nil
	})
	stall()
	rc.mu.Lock()
	finished := rc.lastAt.Sub(killedAt)
	requests, failed, dups := rc.requests, rc.failed, rc.duplicates
	violations := append([]string(nil), rc.violations...)
	bad, badErr := rc.bad, rc.badErr
	var short []string
	for j := range orderedKeys {
		if k := fmt.Sprintf("k%d", j); rc.last[k] != orderedPerKey {
			short = append(short, fmt.Sprintf("%s at %d", k, rc.last[k]))
		}
	}
	rc.mu.Unlock()
	if len(short) > 0 {
		t.Errorf("%d keys did not end at event %d: %s", len(short), orderedPerKey, strings.Join(short[:min(len(short), 10)], ", "))
	}
	if bad > 0 {
		t.Errorf("%d requests failed verification or carried no messageId and n (first: %s)", bad, badErr)
	}
	if len(violations) > 0 {
		for _, v := range violations[:min(len(violations), 10)] {
			t.Errorf("order violation: %s", v)
		}
		t.Errorf("%d order violations in %d requests", len(violations), requests)
		journalMu.Lock()
		t.Log(explainViolations(rc, violations, journal, natsURL, ns))
		journalMu.Unlock()
	}
	if ledger.Len() != orderedTotal {
		t.Errorf("the ledger holds %d events, want %d", ledger.Len(), orderedTotal)
	}
	if err := rc.oracle.CheckAll(ledger.IDs()); err != nil {
		t.Errorf("content: %v", err)
	}
	// The status agrees: nothing pending, nothing failed for good.
	testutil.Eventually(t, 60*time.Second, func() error {
		var w webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "ordered"}, &w); err != nil {
			return err
		}
		if w.Status.TotalEventsSent != orderedTotal || w.Status.EventsPending != 0 || w.Status.EventsFailed != 0 {
			return fmt.Errorf("status totalEventsSent %d pending %d failed %d, want %d, 0, 0", w.Status.TotalEventsSent, w.Status.EventsPending, w.Status.EventsFailed, orderedTotal)
		}
		return nil
	})
	t.Logf("%d events (%d keys x %d) delivered over 3 replicas, leader replica %d killed at %d delivered, replica %d took over: %d requests, %d answered 500, %d duplicate 2xx deliveries, %d order violations; the last event arrived %.1f s after the kill; %.1f s in all",
		orderedTotal, orderedKeys, orderedPerKey, leader, atKill, newLeader, requests, failed, dups, len(violations), finished.Seconds(), time.Since(started).Seconds())
}

// watchOrdered logs the NATS streams' state whenever deliveries make no
// progress for 20 s.
func watchOrdered(t *testing.T, rc *orderReceiver, url string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		last, since := -1, time.Now()
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if n := rc.done(); n != last {
				last, since = n, time.Now()
				continue
			}
			if last == orderedTotal || time.Since(since) < 20*time.Second {
				continue
			}
			since = time.Now()
			t.Logf("no progress for 20 s at %d of %d events delivered:\n%s", last, orderedTotal,
				natsState(url, "WEBHOOK_EVENTS", "WEBHOOK_DELIVERIES", "WEBHOOK_OUTCOMES", store.StreamOrdered))
		}
	}()
	return func() { close(done); <-finished }
}

// explainViolations describes up to three keys with violations: how each of
// their events was posted, the stream sequence each was stored at in the
// events stream, and every request the receiver got for the key.
func explainViolations(rc *orderReceiver, violations []string, journal map[string][]string, url, ns string) string {
	seqs, err := eventSequences(url, store.OrderedEventSubject(ns), store.EventSubject(ns))
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "reading the events stream: %v\n", err)
	}
	seen := map[string]bool{}
	for _, v := range violations {
		key, _, _ := strings.Cut(v, ":")
		if seen[key] || len(seen) == 3 {
			continue
		}
		seen[key] = true
		fmt.Fprintf(&b, "key %s:\n", key)
		for n := 1; n <= orderedPerKey; n++ {
			id := fmt.Sprintf("ord-%s-%d", key, n)
			fmt.Fprintf(&b, "  event %d: stored at seq %d; posts: %s\n", n, seqs[id], strings.Join(journal[id], "; "))
		}
		rc.mu.Lock()
		fmt.Fprintf(&b, "  requests (event:answer@time): %s\n", strings.Join(rc.timeline[key], " "))
		rc.mu.Unlock()
	}
	return b.String()
}

// eventSequences reads the events stream's subject and returns the stream
// sequence of each event id.
func eventSequences(url string, subjects ...string) (map[string]uint64, error) {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, store.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for {
		batch, err := c.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return out, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if meta, err := m.Metadata(); err == nil {
				out[m.Headers().Get(store.HdrEventID)] = meta.Sequence.Stream
			}
		}
		if got == 0 {
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				return out, err
			}
			return out, nil
		}
	}
}
