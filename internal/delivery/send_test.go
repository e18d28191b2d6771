package delivery

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// sendEndpoint is an endpoint of url with one fresh key and the default policy.
func sendEndpoint(t testing.TB, url string) *endpoint.Endpoint {
	t.Helper()
	return sendEndpointWith(t, url, sendSecret(t))
}

// sendSecret is a fresh signing secret, as the operator generates them.
func sendSecret(t testing.TB) string {
	t.Helper()
	secret, err := signing.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// sendEndpointWith is an endpoint of url signing with secret and the
// default policy.
func sendEndpointWith(t testing.TB, url, secret string) *endpoint.Endpoint {
	t.Helper()
	keys, err := signing.ParseSecrets(secret)
	if err != nil {
		t.Fatal(err)
	}
	ep := testEndpoint("crm", url)
	ep.Keys = keys
	return &ep
}

// sendOracle is a content oracle for one event sent by d.send, as its
// delivery: a receiver verifying with the official library and the event
// as enqueued, with the envelope send is given.
func sendOracle(t *testing.T, secret string, ev Event) (*testutil.Receiver, []byte) {
	t.Helper()
	body, err := ev.Envelope()
	if err != nil {
		t.Fatal(err)
	}
	ledger := testutil.NewLedger()
	ledger.Add(testutil.Posted{ID: ev.ID, Type: ev.Type, Data: ev.Data, Timestamp: ev.Timestamp.Format(time.RFC3339Nano)})
	rc, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	return rc, body
}

func sendDispatcher(t testing.TB) *Dispatcher {
	t.Helper()
	d, err := New(Options{Registry: endpoint.NewMemoryRegistry(), Store: &store.Store{}, HTTPClient: NewHTTPClient(mustEgressPolicy(t, []string{"127.0.0.0/8"}))})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSendMakesOneSignedPost checks the request a delivery attempt makes:
// its method, path and query, body, and the headers a receiver verifies.
func TestSendMakesOneSignedPost(t *testing.T) {
	type seen struct {
		method, uri, body string
		header            http.Header
	}
	got := make(chan seen, 1)
	secret := sendSecret(t)
	ev := testEvent(1)
	ev.ID = "evt_1"
	oracle, body := sendOracle(t, secret, ev)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = oracle.Record(r.Header, r.URL.Path, b)
		got <- seen{r.Method, r.RequestURI, string(b), r.Header.Clone()}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	ep := sendEndpointWith(t, srv.URL+"/hooks/wa?tenant=7", secret)
	d := sendDispatcher(t)

	res := d.sender.send(context.Background(), ep, ev.ID, body)
	if res.err != nil || res.statusCode != http.StatusTooManyRequests || res.retryAfter != "7" {
		t.Fatalf("send = %+v, want 429 with Retry-After 7", res)
	}
	s := <-got
	if s.method != http.MethodPost || s.uri != "/hooks/wa?tenant=7" || s.body != string(body) {
		t.Errorf("request %s %s %q, want POST /hooks/wa?tenant=7 with the body", s.method, s.uri, s.body)
	}
	if ct, ua := s.header.Get("Content-Type"), s.header.Get("User-Agent"); ct != "application/json" || ua != "wablast-webhook-operator" {
		t.Errorf("Content-Type %q, User-Agent %q", ct, ua)
	}
	if ae := s.header.Get("Accept-Encoding"); ae != "" {
		t.Errorf("Accept-Encoding %q, want none", ae)
	}
	v := signing.Verifier{Keys: ep.Keys}
	if err := v.Verify(s.header, body); err != nil {
		t.Errorf("signature does not verify: %v (headers %v)", err, s.header)
	}
	if id := s.header.Get(signing.HeaderID); id != "evt_1" {
		t.Errorf("webhook-id %q", id)
	}
	// The official library verifies it, and it carries the event.
	if err := oracle.CheckAll([]string{ev.ID}); err != nil {
		t.Error(err)
	}
}

// TestSendErrorNamesNeitherTheQueryNorASecret checks the text a failed
// attempt leaves in status: the operation and host, not the URL's query.
func TestSendErrorNamesNeitherTheQueryNorASecret(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	ep := sendEndpoint(t, url+"/hook?token=s3cr3t")
	ep.Policy.Timeout = 2 * time.Second
	res := sendDispatcher(t).sender.send(context.Background(), ep, "evt_1", []byte(`{}`))
	if res.err == nil {
		t.Fatalf("send to a closed port succeeded: %+v", res)
	}
	text := res.errorText(ep.Policy.Timeout)
	if !strings.HasPrefix(text, "request failed: dial tcp ") || !strings.Contains(text, "connection refused") {
		t.Errorf("errorText = %q, want the dial error", text)
	}
	if strings.Contains(text, "s3cr3t") || strings.Contains(text, "token") {
		t.Errorf("errorText %q names the query", text)
	}
}

// countingConn counts the writes made to a connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestSendWritesEachRequestInOneWrite checks that headers and body leave in
// one write: a body the transport does not know to be in memory makes it
// flush the headers first, which costs a second system call (and, on many
// networks, a second packet) per attempt.
func TestSendWritesEachRequestInOneWrite(t *testing.T) {
	secret := sendSecret(t)
	ev := testEvent(1)
	oracle, body := sendOracle(t, secret, ev)
	srv := httptest.NewServer(oracle)
	defer srv.Close()
	var writes atomic.Int64
	dialer := &net.Dialer{}
	d, err := New(Options{Registry: endpoint.NewMemoryRegistry(), Store: &store.Store{}, HTTPClient: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			return countingConn{c, &writes}, err
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	ep := sendEndpointWith(t, srv.URL+"/hook", secret).WithParsedURL()
	for i := range 3 {
		before := writes.Load()
		if res := d.sender.send(context.Background(), ep, ev.ID, body); !res.succeeded() {
			t.Fatalf("send: %+v", res)
		}
		if n := writes.Load() - before; n != 1 {
			t.Errorf("attempt %d took %d writes, want 1", i+1, n)
		}
	}
	// Each attempt arrived whole: verified, and the event's body.
	if err := oracle.CheckAll([]string{ev.ID}); err != nil {
		t.Error(err)
	}
	if n := oracle.Requests()[ev.ID]; n != 3 {
		t.Errorf("%d attempts verified, want 3", n)
	}
}

// BenchmarkSend is one delivery attempt over a kept-alive loopback
// connection, from signing to the drained response. The receiver is in the
// same process, so its costs are part of each figure.
func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ep := sendEndpoint(b, srv.URL+"/hook").WithParsedURL() // as workers hold it
	d := sendDispatcher(b)
	body := []byte(`{"type":"message.sent","timestamp":"2026-11-28T10:15:00Z","data":{"messageId":"3EB0C1A2B3C4D5E6F7000001","sessionId":"sess_sales_1","to":"+6281234567890"}}`)
	b.ReportAllocs()
	b.SetParallelism(8) // 16 attempts at once on 2 cores, as maxInFlight's default
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := d.sender.send(context.Background(), ep, "evt_1", body); !res.succeeded() {
				b.Fatalf("send: %+v", res)
			}
		}
	})
}
