//go:build scaleout

// Package scaleout runs three managers against one API server and a
// three-node NATS JetStream cluster (in-process servers on loopback ports),
// posts events spread over the replicas, kills one replica and one NATS node
// during the run, and checks that every event arrives, that the status
// counters equal what the receiver saw, that every delivery carries exactly
// the type, data and timestamp posted under its webhook-id (the content
// oracle, testutil.Receiver), and that no delivery was in flight on two
// replicas at once beyond the redelivery after the kill. Run it with
// `make test-scaleout`.
package scaleout

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

const (
	secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	token  = "scaleout-token-0123456789abcdef"
	total  = 10000
)

// natsCluster is three in-process JetStream servers routed together.
type natsCluster struct {
	t       *testing.T
	ports   [3]int
	cports  [3]int
	dirs    [3]string
	servers [3]*server.Server
}

func (c *natsCluster) start(i int) {
	c.t.Helper()
	var routes []string
	for j := range 3 {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", c.cports[j]))
		}
	}
	opts := &server.Options{
		ServerName: fmt.Sprintf("n%d", i),
		Host:       "127.0.0.1",
		Port:       c.ports[i],
		JetStream:  true,
		StoreDir:   c.dirs[i],
		NoSigs:     true,
		NoLog:      true,
		Cluster:    server.ClusterOpts{Name: "wablast", Host: "127.0.0.1", Port: c.cports[i]},
		Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
	}
	s, err := server.NewServer(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		c.t.Fatalf("nats node %d not ready", i)
	}
	c.servers[i] = s
}

func (c *natsCluster) url() string {
	var urls []string
	for _, p := range c.ports {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return strings.Join(urls, ",")
}

// receiver verifies signatures with the official Standard Webhooks library
// and keeps every body (through the content oracle, which checks them
// against the ledger), and counts how often the same webhook-id was being
// received twice at the same time.
type receiver struct {
	*httptest.Server
	oracle   *testutil.Receiver
	mu       sync.Mutex
	seen     map[string]int
	inFlight map[string]int
	overlaps int
	ok       atomic.Int64
	bad      atomic.Int64
}

func newReceiver(t *testing.T, ledger *testutil.Ledger) *receiver {
	oracle, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{oracle: oracle, seen: map[string]int{}, inFlight: map[string]int{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			_, err = oracle.Record(r.Header, r.URL.Path, body)
		}
		if err != nil {
			rc.bad.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := r.Header.Get("webhook-id")
		rc.mu.Lock()
		if rc.inFlight[id] > 0 {
			rc.overlaps++
		}
		rc.inFlight[id]++
		rc.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		rc.mu.Lock()
		rc.inFlight[id]--
		rc.seen[id]++
		rc.mu.Unlock()
		rc.ok.Add(1)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) unique() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
}

// TestReceiverCatchesAnotherEventsData shows the receiver's check can fail:
// a validly signed body with another posted event's data is caught.
func TestReceiverCatchesAnotherEventsData(t *testing.T) {
	ledger := testutil.NewLedger()
	rc := newReceiver(t, ledger)
	evs := testutil.VariedEvents("self", 3)
	ledger.Add(evs...)
	swapped := evs[1]
	swapped.Data = evs[2].Data
	for _, x := range []struct {
		id string
		ev testutil.Posted
	}{{evs[0].ID, evs[0]}, {evs[1].ID, swapped}} {
		if code, err := testutil.SendSigned(rc.URL, secret, x.id, testutil.Envelope(x.ev)); err != nil || code != http.StatusOK {
			t.Fatalf("delivering %s: %d %v", x.id, code, err)
		}
	}
	err := rc.oracle.Check()
	if err == nil || !strings.Contains(err.Error(), "1 of 2 delivered events do not match") {
		t.Fatalf("Check = %v, want event 1 (event 2's data) refused and event 0 passed", err)
	}
}

// attempts scrapes a replica's delivery attempt counter.
func attempts(r *testutil.ManagerProcess) (float64, error) {
	resp, err := http.Get("http://" + r.MetricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "wablast_webhook_delivery_attempts_total{") {
			var v float64
			if _, err := fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v); err == nil {
				sum += v
			}
		}
	}
	return sum, nil
}

func TestThreeReplicasOnANATSCluster(t *testing.T) {
	root := testutil.RepoRoot()
	managerBin := filepath.Join(root, "bin", "manager")
	if _, err := os.Stat(managerBin); err != nil {
		t.Fatal("bin/manager is missing: run 'make test-scaleout', which builds it")
	}
	env, err := testutil.StartEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()

	// The NATS cluster.
	nc := &natsCluster{t: t}
	for i := range 3 {
		nc.ports[i], nc.cports[i], nc.dirs[i] = testutil.FreePort(t), testutil.FreePort(t), t.TempDir()
	}
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { nc.start(i) })
	}
	wg.Wait()
	defer func() {
		for _, s := range nc.servers {
			if s != nil {
				s.Shutdown()
			}
		}
	}()

	// The resources.
	ns := env.Namespace(t)
	ledger := testutil.NewLedger()
	rc := newReceiver(t, ledger)
	objs := []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sig"}, StringData: map[string]string{"secret": secret}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest", Labels: map[string]string{"webhooks.wablast.io/ingest-token": "true"}}, StringData: map[string]string{"token": token}},
		&webhooksv1alpha1.WebhookConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm"},
			Spec: webhooksv1alpha1.WebhookConfigSpec{
				URL: rc.URL, SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: "sig"},
				Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
			},
		},
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	// Three managers.
	replicas := make([]*testutil.ManagerProcess, 3)
	for i := range replicas {
		replicas[i] = testutil.StartManager(t, testutil.ManagerOptions{
			Bin: managerBin,
			Args: []string{
				"--kubeconfig", env.Kubeconfig,
				"--nats-url", nc.url(), "--nats-replicas", "3",
				"--leader-elect", "--leader-election-namespace", ns,
				"--egress-allow-cidrs", "127.0.0.0/8",
				"--status-flush-interval", "1s",
			},
			Metrics:   true,
			LogPath:   filepath.Join(logDir(t), fmt.Sprintf("manager-%d.log", i)),
			TailLines: 40,
		})
		replicas[i].WaitReady(60 * time.Second)
	}
	waitWHCReady(t, env.Client, ns, "crm")

	// Post 10,000 events (each with data of its own) in batches of 100
	// spread over the replicas; a replica that is down is skipped and the
	// batch goes to the next one (the ids make the retry safe). What a 202
	// accepted goes to the ledger.
	var dead [3]atomic.Bool
	post := func(batch int) error {
		evs := testutil.VariedEvents(fmt.Sprintf("so-%d", batch), 100)
		body := testutil.NDJSON(evs, true)
		for attempt := range 30 {
			r := replicas[(batch+attempt)%3]
			if dead[(batch+attempt)%3].Load() {
				continue
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+r.IngestAddr+"/v1/namespaces/"+ns+"/events", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/x-ndjson")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				answer, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusAccepted {
					if _, err := ledger.Accepted(evs, answer); err != nil {
						return fmt.Errorf("batch %d: %w", batch, err)
					}
					return nil
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("batch %d never accepted", batch)
	}
	var posted sync.WaitGroup
	errs := make(chan error, total/100)
	batches := make(chan int)
	for range 4 {
		posted.Go(func() {
			for b := range batches {
				if err := post(b); err != nil {
					errs <- err
				}
			}
		})
	}
	killed := false
	for b := range total / 100 {
		batches <- b
		if b == 30 {
			// Mid-run: kill one replica and stop one NATS node.
			dead[1].Store(true)
			replicas[1].Kill9()
			nc.servers[2].Shutdown()
			nc.servers[2] = nil
			killed = true
			t.Log("killed manager 1 and NATS node 2")
		}
	}
	close(batches)
	posted.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !killed {
		t.Fatal("nothing was killed")
	}

	stopWatch := watchProgress(t, rc, nc.url())
	defer stopWatch()
	testutil.Eventually(t, 4*time.Minute, func() error {
		if n := rc.unique(); n != total {
			return fmt.Errorf("%d of %d events delivered", n, total)
		}
		return nil
	})
	if rc.bad.Load() != 0 {
		t.Errorf("%d deliveries failed signature verification", rc.bad.Load())
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		var w webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "crm"}, &w); err != nil {
			return err
		}
		// Counters count events, from the outcomes recorded through JetStream by
		// whichever replica delivered them: a delivery the killed replica made
		// but could not record is delivered (and counted) once more elsewhere.
		if got, want := w.Status.EventsDelivered, int64(rc.unique()); got != want {
			return fmt.Errorf("status eventsDelivered %d, the receiver saw %d distinct events (%d 2xx answers)", got, want, rc.ok.Load())
		}
		if w.Status.TotalEventsSent != total {
			return fmt.Errorf("status totalEventsSent %d, want %d", w.Status.TotalEventsSent, total)
		}
		if w.Status.EventsPending != 0 || w.Status.EventsFailed != 0 {
			return fmt.Errorf("pending %d failed %d", w.Status.EventsPending, w.Status.EventsFailed)
		}
		return nil
	})
	// How the surviving replicas shared the work. The endpoint's consumer is
	// shared, so any replica may take any delivery; with one endpoint and a
	// fast receiver one replica can take nearly all, so the split is reported,
	// not asserted.
	for _, i := range []int{0, 2} {
		n, err := attempts(replicas[i])
		if err != nil {
			t.Fatalf("scraping replica %d: %v", i, err)
		}
		t.Logf("replica %d made %.0f delivery attempts", i, n)
	}
	rc.mu.Lock()
	overlaps, dups := rc.overlaps, int(rc.ok.Load())-total
	rc.mu.Unlock()
	t.Logf("%d events delivered over 3 replicas; %d duplicate deliveries (at-least-once after the kill); %d overlapping", total, dups, overlaps)
	// Content, once every copy has arrived (the status above counts them).
	if ledger.Len() != total {
		t.Errorf("the ledger holds %d events, want %d", ledger.Len(), total)
	}
	if err := rc.oracle.CheckAll(ledger.IDs()); err != nil {
		t.Errorf("content: %v", err)
	} else {
		t.Logf("every one of the %d events arrived with exactly the type, data and timestamp posted, every copy the same", total)
	}
	// A delivery in flight on the killed replica is redelivered to another
	// after its ack wait; at most maxInFlight (16) of them can overlap.
	if overlaps > 16 {
		t.Errorf("%d deliveries were in flight on two replicas at once", overlaps)
	}
}

// logDir is where the managers' logs go: SCALEOUT_LOG_DIR when set (kept
// after the test, to study a failure), a temporary directory otherwise.
func logDir(t *testing.T) string {
	if d := os.Getenv("SCALEOUT_LOG_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// watchProgress logs the NATS streams' and consumers' state whenever
// deliveries make no progress for 20 s, so a stall can be told apart: events
// not fanned out, deliveries stored but not handed out, or handed out and
// never acknowledged.
func watchProgress(t *testing.T, rc *receiver, url string) (stop func()) {
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
			n := rc.unique()
			if n != last {
				last, since = n, time.Now()
				continue
			}
			if n == total || time.Since(since) < 20*time.Second {
				continue
			}
			since = time.Now()
			t.Logf("no progress for 20 s at %d of %d events delivered:\n%s", n, total, natsState(url))
		}
	}()
	return func() { close(done); <-finished }
}

// natsState describes the streams (by default WEBHOOK_EVENTS,
// WEBHOOK_DELIVERIES and WEBHOOK_OUTCOMES) and their consumers.
func natsState(url string, streams ...string) string {
	if len(streams) == 0 {
		streams = []string{"WEBHOOK_EVENTS", "WEBHOOK_DELIVERIES", "WEBHOOK_OUTCOMES"}
	}
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return "connecting: " + err.Error()
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var b strings.Builder
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			fmt.Fprintf(&b, "stream %s: %v\n", name, err)
			continue
		}
		info, err := s.Info(ctx)
		if err != nil {
			fmt.Fprintf(&b, "stream %s info: %v\n", name, err)
			continue
		}
		leader := ""
		if info.Cluster != nil {
			leader = info.Cluster.Leader
		}
		fmt.Fprintf(&b, "stream %s: msgs=%d first=%d last=%d consumers=%d leader=%s\n", name, info.State.Msgs, info.State.FirstSeq, info.State.LastSeq, info.State.Consumers, leader)
		lister := s.ListConsumers(ctx)
		for ci := range lister.Info() {
			cl := ""
			if ci.Cluster != nil {
				cl = ci.Cluster.Leader
			}
			fmt.Fprintf(&b, "  consumer %s: pending=%d ackPending=%d redelivered=%d waiting=%d delivered=%d ackFloor=%d leader=%s\n",
				ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.Delivered.Stream, ci.AckFloor.Stream, cl)
		}
		if err := lister.Err(); err != nil {
			fmt.Fprintf(&b, "  listing consumers: %v\n", err)
		}
	}
	return b.String()
}

// waitWHCReady waits until the WebhookConfig ns/name is Ready.
func waitWHCReady(t *testing.T, c client.Reader, ns, name string) {
	t.Helper()
	testutil.Eventually(t, 60*time.Second, func() error {
		var w webhooksv1alpha1.WebhookConfig
		if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &w); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") {
			return errors.New("not Ready")
		}
		return nil
	})
}
