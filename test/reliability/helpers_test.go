//go:build reliability

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// signingSecret signs every endpoint of these tests.
const signingSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func randomToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "rel-" + hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------
// The manager as a subprocess.

type managerOptions struct {
	kubeconfig string // env.Kubeconfig when empty
	dataDir    string
	extra      []string
	env        []string // added to the environment
}

// setupCRM creates a namespace with an ingest token and a WebhookConfig
// "crm" with policy pol, delivering to a receiver that answers 200 after
// delay and checks content against a ledger of its own (rc.ledger), then
// starts bin/manager with opts and waits until both are ready.
func setupCRM(t *testing.T, delay time.Duration, pol policy, opts managerOptions) (ns, token string, rc *receiver, m *testutil.ManagerProcess) {
	t.Helper()
	ns = env.Namespace(t)
	token = randomToken()
	createIngestToken(t, ns, token)
	rc = newReceiver(t, testutil.NewLedger(), func(w http.ResponseWriter, r *http.Request) int {
		time.Sleep(delay)
		return answerOK(w, r)
	})
	createEndpoint(t, ns, "crm", rc.URL+"/hooks/wa", pol)
	m = startManager(t, opts)
	m.WaitReady(90 * time.Second)
	waitWHCReady(t, ns, "crm")
	return ns, token, rc, m
}

// startManager runs bin/manager as a child process (see
// testutil.ManagerProcess) with the flags every test here gives it: the
// control plane, a data directory for the embedded NATS server unless
// extra points it elsewhere, loopback receivers allowed, status flushed
// every second.
func startManager(t *testing.T, opts managerOptions) *testutil.ManagerProcess {
	t.Helper()
	if opts.kubeconfig == "" {
		opts.kubeconfig = env.Kubeconfig
	}
	args := []string{
		"--kubeconfig", opts.kubeconfig,
		"--data-dir", opts.dataDir,
		"--egress-allow-cidrs", "127.0.0.0/8",
		"--status-flush-interval", "1s",
	}
	return testutil.StartManager(t, testutil.ManagerOptions{
		Bin:          managerBin,
		Args:         append(args, opts.extra...),
		Metrics:      true,
		Env:          opts.env,
		ShowLogs:     os.Getenv("RELIABILITY_SHOW_LOGS") != "",
		ArtifactsDir: os.Getenv("RELIABILITY_ARTIFACTS"),
	})
}

// grepLog returns the log lines containing every one of words.
func grepLog(s string, words ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ok := true
		for _, w := range words {
			if !strings.Contains(line, w) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Receivers.

// receiver verifies each request's signature with the official Standard
// Webhooks library and keeps its body (through a testutil.Receiver, the
// content oracle: checkContent compares every body with what was posted,
// as recorded in ledger), answers as its mode says, and records every
// webhook-id.
type receiver struct {
	*httptest.Server
	// oracle verifies and keeps every body by webhook-id.
	oracle *testutil.Receiver
	// ledger is what was posted for this receiver's endpoint (shared by
	// receivers of the same events).
	ledger *testutil.Ledger
	// respond answers one verified request; it returns the status written,
	// or 0 when it wrote none (hijacked, hung).
	respond func(w http.ResponseWriter, r *http.Request) int
	closing chan struct{}

	mu       sync.Mutex
	requests map[string]int       // requests per webhook-id
	oks      map[string]int       // 2xx answers per webhook-id
	firstOK  map[string]time.Time // first 2xx answer per webhook-id
	statuses map[int]int          // answers by status (0: none)
	log      []exchange           // every verified request, in order of answer

	total, ok2xx, badSig atomic.Int64
	lastRequest          atomic.Int64 // Unix nanoseconds
}

func newReceiver(t *testing.T, ledger *testutil.Ledger, respond func(w http.ResponseWriter, r *http.Request) int) *receiver {
	t.Helper()
	oracle, err := testutil.NewReceiver(signingSecret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	rc := &receiver{
		oracle:   oracle,
		ledger:   ledger,
		respond:  respond,
		closing:  make(chan struct{}),
		requests: map[string]int{},
		oks:      map[string]int{},
		firstOK:  map[string]time.Time{},
		statuses: map[int]int{},
	}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		close(rc.closing)
		rc.Close()
	})
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	rc.lastRequest.Store(time.Now().UnixNano())
	rc.total.Add(1)
	body, err := io.ReadAll(r.Body)
	id := r.Header.Get("webhook-id")
	if err == nil {
		_, err = rc.oracle.Record(r.Header, r.URL.Path, body)
	}
	if err != nil {
		rc.badSig.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	arrived := time.Now()
	rc.mu.Lock()
	rc.requests[id]++
	rc.mu.Unlock()
	// respond may read the body again (an order check parses it).
	r.Body = io.NopCloser(bytes.NewReader(body))
	code := rc.respond(w, r)
	now := time.Now()
	rc.mu.Lock()
	rc.log = append(rc.log, exchange{id: id, arrived: arrived, answered: now, code: code})
	rc.statuses[code]++
	if code >= 200 && code < 300 {
		rc.oks[id]++
		if _, ok := rc.firstOK[id]; !ok {
			rc.firstOK[id] = now
		}
	}
	rc.mu.Unlock()
	if code >= 200 && code < 300 {
		rc.ok2xx.Add(1)
	}
}

// checkContent fails t unless every body rc received (every attempt, on
// any answer) carries exactly the type, data and timestamp posted under its
// webhook-id, every copy of an id is the same body, every signature
// verified, and every id of want arrived.
func (rc *receiver) checkContent(t *testing.T, name string, want []string) {
	t.Helper()
	if err := rc.oracle.CheckAll(want); err != nil {
		t.Errorf("%s: content: %v", name, err)
		return
	}
	t.Logf("RESULT content %s: the %d distinct events received (%d expected) each carried exactly the type, data and timestamp posted", name, rc.oracle.Unique(), len(want))
}

// exchange is one verified request and its answer.
type exchange struct {
	id                string
	arrived, answered time.Time
	code              int
}

func (rc *receiver) exchanges() []exchange {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.log)
}

// uniqueOK is the number of webhook-ids answered 2xx at least once.
func (rc *receiver) uniqueOK() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.oks)
}

// okCounts returns a copy of the 2xx answers per webhook-id.
func (rc *receiver) okCounts() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.oks)
}

// requestCounts returns a copy of the requests per webhook-id.
func (rc *receiver) requestCounts() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.requests)
}

// firstOKAt is when id was first answered with success, zero if never.
func (rc *receiver) firstOKAt(id string) time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.firstOK[id]
}

func (rc *receiver) statusCounts() map[int]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[int]int{}
	for k, v := range rc.statuses {
		out[k] = v
	}
	return out
}

// quietFor reports whether no request arrived during the last d.
func (rc *receiver) quietFor(d time.Duration) bool {
	last := rc.lastRequest.Load()
	return last == 0 || time.Since(time.Unix(0, last)) >= d
}

// duplicates returns the ids answered 2xx more than once, and the extra 2xx answers.
func duplicates(oks map[string]int) (ids []string, extra int) {
	for id, n := range oks {
		if n > 1 {
			ids = append(ids, id)
			extra += n - 1
		}
	}
	slices.Sort(ids)
	return ids, extra
}

func answerOK(w http.ResponseWriter, _ *http.Request) int {
	w.WriteHeader(http.StatusOK)
	return http.StatusOK
}

// ---------------------------------------------------------------------------
// Kubernetes objects.

type policy struct {
	timeoutSeconds, maxAttempts, initialBackoff, maxBackoff, maxInFlight int32
	// events subscribed; every type ("*") when empty.
	events []webhooksv1alpha1.EventType
	// ordering is spec.delivery.ordering (the API's default, Unordered,
	// when empty); orderingKey its key expression (the default when empty).
	ordering    webhooksv1alpha1.DeliveryOrdering
	orderingKey string
}

// createEndpoint creates the signing Secret and a WebhookConfig for every event type.
func createEndpoint(t *testing.T, ns, name, url string, p policy) {
	t.Helper()
	ctx := context.Background()
	events := p.events
	if len(events) == 0 {
		events = []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll}
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-secret"},
		StringData: map[string]string{"secret": signingSecret},
	}
	whc := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:       url,
			SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: name + "-secret"},
			Events:    events,
			Delivery: &webhooksv1alpha1.DeliveryPolicy{
				TimeoutSeconds:        p.timeoutSeconds,
				MaxAttempts:           p.maxAttempts,
				InitialBackoffSeconds: p.initialBackoff,
				MaxBackoffSeconds:     p.maxBackoff,
				MaxInFlight:           p.maxInFlight,
				Ordering:              p.ordering,
				OrderingKey:           p.orderingKey,
			},
		},
	}
	for _, o := range []client.Object{sec, whc} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	// Namespaces are never really deleted by envtest (no namespace
	// controller): remove the resource so that later managers, which watch
	// every namespace, do not pick it up.
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), whc) })
}

// createIngestToken creates a static ingest token Secret in ns.
func createIngestToken(t *testing.T, ns, token string) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest-token", Labels: map[string]string{"webhooks.wablast.io/ingest-token": "true"}},
		StringData: map[string]string{"token": token},
	}
	if err := env.Client.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), s) })
}

func getWHC(t testing.TB, ns, name string) *webhooksv1alpha1.WebhookConfig {
	t.Helper()
	var w webhooksv1alpha1.WebhookConfig
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &w); err != nil {
		t.Fatal(err)
	}
	return &w
}

func waitWHCReady(t *testing.T, ns string, names ...string) {
	t.Helper()
	for _, name := range names {
		testutil.EventuallyEvery(t, 60*time.Second, 100*time.Millisecond, func() error {
			if !meta.IsStatusConditionTrue(getWHC(t, ns, name).Status.Conditions, "Ready") {
				return fmt.Errorf("%s/%s not Ready", ns, name)
			}
			return nil
		})
	}
}

// counters are the delivery counters of a status.
type counters struct {
	Sent, Delivered, Failed, Pending int64
}

func statusCounters(t testing.TB, ns, name string) counters {
	st := getWHC(t, ns, name).Status
	return counters{st.TotalEventsSent, st.EventsDelivered, st.EventsFailed, st.EventsPending}
}

func (c counters) String() string {
	return fmt.Sprintf("totalEventsSent=%d eventsDelivered=%d eventsFailed=%d eventsPending=%d", c.Sent, c.Delivered, c.Failed, c.Pending)
}

// ---------------------------------------------------------------------------
// Producing events.

var postClient = &http.Client{Timeout: 40 * time.Second}

// post sends body to the ingestion API at addr. err is set when no HTTP answer came.
func post(addr, ns, token, contentType string, body []byte) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/namespaces/"+ns+"/events", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := postClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// eventLine is one valid message.sent event with an explicit id, for bad
// input that must never be delivered (good events are made by events).
func eventLine(id string) string {
	return fmt.Sprintf(`{"id":%q,"type":"message.sent","data":{"messageId":%q,"sessionId":"s-1","to":"+6281234567890"}}`, id, "m-"+id)
}

// events returns one event for each id, each with data of its own
// (testutil.VariedEvent: a few bytes to a few kilobytes, unicode, escapes,
// nested values, some with a timestamp), of type typ, or of the catalog's
// postable types when typ is "". An event depends on its id alone, so an id
// posted again carries the same content.
func events(ids []string, typ string) []testutil.Posted {
	var types []string
	if typ != "" {
		types = []string{typ}
	}
	out := make([]testutil.Posted, len(ids))
	for i, id := range ids {
		// The id is the prefix, so that the data (sessionId, messageId...)
		// differs from every other id's; a hash of it picks the shape.
		h := fnv.New32a()
		h.Write([]byte(id))
		out[i] = testutil.VariedEvent(id, int(h.Sum32()%100000), types...)
		out[i].ID = id
	}
	return out
}

// idsOf returns the ids of evs.
func idsOf(evs []testutil.Posted) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

// postEvents posts evs, with their ids or without (the API makes them), as
// one JSON event when there is one and single is set, as an NDJSON batch
// otherwise. On a 202 it records them in ledger, with the ids the answer
// gave, and returns those ids; an answer that does not match what was
// posted is an error.
func postEvents(addr, ns, token string, ledger *testutil.Ledger, evs []testutil.Posted, withID, single bool) (ids []string, code int, body string, err error) {
	ct, payload := "application/x-ndjson", testutil.NDJSON(evs, withID)
	if single && len(evs) == 1 {
		ct, payload = "application/json", evs[0].JSON(withID)
	}
	code, body, err = post(addr, ns, token, ct, payload)
	if err != nil || code != http.StatusAccepted {
		return nil, code, body, err
	}
	posted := evs
	if !withID {
		posted = make([]testutil.Posted, len(evs))
		for i, ev := range evs {
			ev.ID = ""
			posted[i] = ev
		}
	}
	ids, err = ledger.Accepted(posted, []byte(body))
	return ids, code, body, err
}

// mustPost posts evs with their ids (see postEvents) and fails t unless the answer is a 202.
func mustPost(t *testing.T, addr, ns, token string, ledger *testutil.Ledger, evs []testutil.Posted, single bool) {
	t.Helper()
	if _, code, body, err := postEvents(addr, ns, token, ledger, evs, true, single); code != http.StatusAccepted || err != nil {
		t.Fatalf("post: %d %s %v", code, body, err)
	}
}

func idRange(prefix string, from, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, from+i)
	}
	return ids
}

// producer posts batches the way a careful application does: a batch that
// is not answered 202 (no answer, 503) is posted again with the same ids
// until it is, and every answer is counted.
type producer struct {
	addr, ns, token string
	// ledger records every batch answered 202.
	ledger      *testutil.Ledger
	retryEvery  time.Duration
	giveUpAfter time.Duration
	// single posts a batch of one event as one JSON event, not as NDJSON.
	single bool

	mu       sync.Mutex
	codes    map[string]int // "202", "503", "conn-error", ...
	accepted map[string]time.Time
	// firstErrors keeps a few examples of what went wrong, for the report.
	firstErrors []string
	// slow keeps the posts that took longer than slowPost.
	slow    []slowPost
	retried int // batches posted more than once
}

// slowPostThreshold is how long a post may take before it is reported.
const slowPostThreshold = 2 * time.Second

type slowPost struct {
	first string
	sent  time.Time
	took  time.Duration
	code  int
	err   error
}

// slowPosts describes the posts that took longer than slowPostThreshold,
// with their start relative to ref.
func (p *producer) slowPosts(ref time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range p.slow {
		out = append(out, fmt.Sprintf("batch %s.. posted %s after the reference took %s (answer %d, error %v)",
			s.first, s.sent.Sub(ref).Round(time.Millisecond), s.took.Round(time.Millisecond), s.code, s.err))
	}
	return out
}

func newProducer(addr, ns, token string, ledger *testutil.Ledger) *producer {
	return &producer{addr: addr, ns: ns, token: token, ledger: ledger, retryEvery: 200 * time.Millisecond, giveUpAfter: 2 * time.Minute,
		codes: map[string]int{}, accepted: map[string]time.Time{}}
}

// postBatch posts evs (with their ids) until answered 202, records them in
// the ledger, and returns how many posts that took, or an error after
// giveUpAfter.
func (p *producer) postBatch(evs []testutil.Posted) (int, error) {
	ids := idsOf(evs)
	deadline := time.Now().Add(p.giveUpAfter)
	for attempt := 0; ; attempt++ {
		if attempt == 1 {
			p.mu.Lock()
			p.retried++
			p.mu.Unlock()
		}
		sentAt := time.Now()
		_, code, respBody, err := postEvents(p.addr, p.ns, p.token, p.ledger, evs, true, p.single)
		if code == http.StatusAccepted && err != nil {
			return attempt + 1, fmt.Errorf("batch %s..: %w", ids[0], err)
		}
		if took := time.Since(sentAt); took > slowPostThreshold {
			p.mu.Lock()
			p.slow = append(p.slow, slowPost{first: ids[0], sent: sentAt, took: took, code: code, err: err})
			p.mu.Unlock()
		}
		key := fmt.Sprint(code)
		if err != nil {
			key = "no-answer"
		}
		now := time.Now()
		p.mu.Lock()
		p.codes[key]++
		if code == http.StatusAccepted {
			for _, id := range ids {
				p.accepted[id] = now
			}
		} else if len(p.firstErrors) < 5 {
			msg := respBody
			if err != nil {
				msg = err.Error()
			}
			p.firstErrors = append(p.firstErrors, fmt.Sprintf("%s %s: %s", now.Format("15:04:05.000"), key, strings.TrimSpace(msg)))
		}
		p.mu.Unlock()
		if code == http.StatusAccepted {
			return attempt + 1, nil
		}
		if code != 0 && code != http.StatusServiceUnavailable {
			return attempt + 1, fmt.Errorf("batch %s..: unexpected %d %s", ids[0], code, respBody)
		}
		if now.After(deadline) {
			return attempt + 1, fmt.Errorf("batch %s.. not accepted after %s", ids[0], p.giveUpAfter)
		}
		time.Sleep(p.retryEvery)
	}
}

func (p *producer) acceptedIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.accepted))
	for id := range p.accepted {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (p *producer) codeCounts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.codes {
		out[k] = v
	}
	return out
}

// waitReceived waits until rc has answered 2xx for n distinct events, the
// moment a kill test kills the manager.
func waitReceived(t *testing.T, rc *receiver, n int) {
	t.Helper()
	testutil.EventuallyEvery(t, 3*time.Minute, 2*time.Millisecond, func() error {
		if got := rc.uniqueOK(); got < n {
			return fmt.Errorf("%d of %d events received before the kill", got, n)
		}
		return nil
	})
}

// waitSettled waits until at least settle has passed since from
// (deliveries interrupted at a failure come back after their ack wait) and
// then until rc has been quiet for 3 s; since names from in messages.
func waitSettled(t *testing.T, rc *receiver, from time.Time, settle time.Duration, since string) {
	t.Helper()
	testutil.EventuallyEvery(t, 2*time.Minute, 250*time.Millisecond, func() error {
		if d := time.Since(from); d < settle {
			return fmt.Errorf("only %s since %s", d.Round(time.Second), since)
		}
		if !rc.quietFor(3 * time.Second) {
			return fmt.Errorf("the receiver is still receiving")
		}
		return nil
	})
}

// missing returns the ids of want that rc never answered 2xx.
func missing(rc *receiver, want []string) []string {
	oks := rc.okCounts()
	var out []string
	for _, id := range want {
		if oks[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// percentile returns the p-th percentile (0..100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(p/100*float64(len(s)) + 0.999999)
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// TestContentCheckCatchesAnotherEventsData shows that the receivers' check
// can fail: a validly signed body carrying another posted event's data, or
// data that differs from what a batch without an answer posted, is caught.
func TestContentCheckCatchesAnotherEventsData(t *testing.T) {
	send := func(rc *receiver, id string, ev testutil.Posted) {
		t.Helper()
		if code, err := testutil.SendSigned(rc.URL+"/hooks", signingSecret, id, testutil.Envelope(ev)); err != nil || code != http.StatusOK {
			t.Fatalf("delivering %s: %d %v", id, code, err)
		}
	}
	evs := events(idRange("self", 0, 8), "")
	rc := newReceiver(t, testutil.NewLedger(), answerOK)
	rc.ledger.Add(evs[:4]...)
	for _, ev := range evs[:3] {
		send(rc, ev.ID, ev)
	}
	if err := rc.oracle.CheckAll(idsOf(evs[:3])); err != nil {
		t.Fatalf("the posted content was refused: %v", err)
	}
	other := evs[0]
	other.ID = evs[3].ID
	send(rc, evs[3].ID, other)
	if err := rc.oracle.Check(); err == nil {
		t.Fatal("event 0's content delivered under event 3's id passed the check")
	}

	// Batches posted without ids and not answered (the kill test).
	rc2 := newReceiver(t, testutil.NewLedger(), answerOK)
	un := &unanswered{bySession: map[string]testutil.Posted{}}
	rc2.oracle.Expect = un.expect(rc2.oracle)
	un.add(evs[4:])
	send(rc2, "gen-1", evs[4])
	if err := rc2.oracle.Check(); err != nil {
		t.Fatalf("an unanswered event's own content was refused: %v", err)
	}
	if dups := un.deliveredTwice(rc2); len(dups) > 0 {
		t.Fatalf("delivered twice: %v", dups)
	}
	send(rc2, "gen-2", evs[4])
	if dups := un.deliveredTwice(rc2); len(dups) != 1 {
		t.Fatalf("an event delivered under two ids was not noticed: %v", dups)
	}
	changed := evs[5]
	var m map[string]any
	if err := json.Unmarshal(changed.Data, &m); err != nil {
		t.Fatal(err)
	}
	m["seq"] = -1
	var err error
	if changed.Data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	send(rc2, "gen-3", changed)
	if err := rc2.oracle.Check(); err == nil {
		t.Fatal("changed data of an unanswered event passed the check")
	}
}

// accepted returns how many events the manager's current generation has
// accepted and stored (duplicates not counted), from its metrics.
func accepted(t *testing.T, m *testutil.ManagerProcess) int {
	t.Helper()
	v, err := m.MetricSum("wablast_webhook_events_accepted_total")
	if err != nil {
		t.Fatal(err)
	}
	return int(v)
}
