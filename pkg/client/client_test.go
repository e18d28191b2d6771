package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// script answers the i-th request with answers[i] (the last one after
// that) and records the bodies.
type script struct {
	mu      sync.Mutex
	answers []func(w http.ResponseWriter)
	bodies  []string
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	i := len(s.bodies)
	s.bodies = append(s.bodies, string(b))
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != "/v1/namespaces/shop/events" {
		w.WriteHeader(http.StatusTeapot)
		return
	}
	s.answers[min(i, len(s.answers)-1)](w)
}

func answer(code int, retryAfter, body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

// newClient returns a client of srv whose waits are recorded, not slept.
func newClient(url string) (*Client, *[]time.Duration) {
	c := New(url, "tok")
	var waits []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		return ctx.Err()
	}
	return c, &waits
}

var ev = Event{ID: "m-1:sent", Type: "message.sent", Data: json.RawMessage(`{"messageId":"m-1","sessionId":"s-1","to":"+6281234567890"}`)}

func TestRetriesA503AfterItsRetryAfterAndSendsTheSameBody(t *testing.T) {
	s := &script{answers: []func(http.ResponseWriter){
		answer(503, "2", `{"error":{"code":"store_unavailable","message":"the store is unavailable"}}`),
		answer(429, "1", `{"error":{"code":"too_many_requests","message":"slow down"}}`),
		answer(202, "", `{"id":"m-1:sent","subscribers":2}`),
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, waits := newClient(srv.URL)
	res, err := c.Post(context.Background(), "shop", ev)
	if err != nil || res != (Accepted{ID: "m-1:sent", Subscribers: 2}) {
		t.Fatalf("%+v %v", res, err)
	}
	if len(*waits) != 2 || (*waits)[0] != 2*time.Second || (*waits)[1] != time.Second {
		t.Errorf("waits %v, want the Retry-After of each answer: [2s 1s]", *waits)
	}
	want := `{"id":"m-1:sent","type":"message.sent","data":{"messageId":"m-1","sessionId":"s-1","to":"+6281234567890"}}`
	for i, b := range s.bodies {
		if b != want {
			t.Errorf("attempt %d sent %s, want %s", i+1, b, want)
		}
	}
}

func TestARetryAfterOverMaxBackoffIsCapped(t *testing.T) {
	s := &script{answers: []func(http.ResponseWriter){
		answer(503, "3600", `{"error":{"code":"overloaded","message":"busy"}}`),
		answer(202, "", `{"id":"m-1:sent","subscribers":1}`),
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, waits := newClient(srv.URL)
	c.MaxBackoff = 10 * time.Second
	if _, err := c.Post(context.Background(), "shop", ev); err != nil {
		t.Fatal(err)
	}
	if len(*waits) != 1 || (*waits)[0] != 10*time.Second {
		t.Errorf("waits %v, want [10s]", *waits)
	}
}

func TestAClientErrorIsTypedAndNotRetried(t *testing.T) {
	s := &script{answers: []func(http.ResponseWriter){
		answer(422, "", `{"error":{"code":"schema_violation","message":"data does not match the message.sent schema at /to: bad"}}`),
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, waits := newClient(srv.URL)
	_, err := c.Post(context.Background(), "shop", ev)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnprocessableEntity || apiErr.Code != CodeSchemaViolation || !strings.Contains(apiErr.Message, "/to") || apiErr.Retryable() {
		t.Fatalf("error %#v", err)
	}
	if len(s.bodies) != 1 || len(*waits) != 0 {
		t.Errorf("%d requests, %d waits: a 422 is not retried", len(s.bodies), len(*waits))
	}
}

func TestABatchErrorNamesItsLines(t *testing.T) {
	s := &script{answers: []func(http.ResponseWriter){
		answer(400, "", `{"error":{"code":"invalid_batch","message":"line 2: bad","lines":[2],"details":[{"line":2,"code":"unknown_event_type","message":"unknown event type \"x\""}]}}`),
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, _ := newClient(srv.URL)
	_, err := c.PostBatch(context.Background(), "shop", []Event{ev, {Type: "x", Data: json.RawMessage(`{}`)}})
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != CodeInvalidBatch || len(apiErr.Lines) != 1 || apiErr.Lines[0] != 2 || len(apiErr.Details) != 1 || apiErr.Details[0].Code != "unknown_event_type" {
		t.Fatalf("error %#v", err)
	}
	lines := strings.Split(strings.TrimSuffix(s.bodies[0], "\n"), "\n")
	if len(lines) != 2 || lines[1] != `{"type":"x","data":{}}` {
		t.Errorf("batch body %q", s.bodies[0])
	}
}

func TestRetriesStopAfterMaxAttempts(t *testing.T) {
	s := &script{answers: []func(http.ResponseWriter){
		answer(503, "", `{"error":{"code":"store_unavailable","message":"down"}}`),
	}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c, waits := newClient(srv.URL)
	c.MaxAttempts = 4
	c.MinBackoff, c.MaxBackoff = 100*time.Millisecond, 300*time.Millisecond
	_, err := c.Post(context.Background(), "shop", ev)
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != CodeStoreUnavailable {
		t.Fatalf("error %v", err)
	}
	if len(s.bodies) != 4 || len(*waits) != 3 {
		t.Fatalf("%d requests and %d waits, want 4 and 3", len(s.bodies), len(*waits))
	}
	// No Retry-After: 100 ms doubled, capped at 300 ms, each a random
	// half to all of it.
	for i, w := range *waits {
		ceiling := min(100*time.Millisecond<<i, 300*time.Millisecond)
		if w < ceiling/2 || w > ceiling {
			t.Errorf("wait %d is %s, want between %s and %s", i+1, w, ceiling/2, ceiling)
		}
	}
}

func TestTheBackoffIsJittered(t *testing.T) {
	c := New("http://x", "t")
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[c.backoff(3)] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 backoffs took %d values: not jittered", len(seen))
	}
}

// A request that got no answer may have been stored: it is posted again
// only when every event has an id.
func TestNoAnswerIsRetriedOnlyWithIDs(t *testing.T) {
	var hits atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		_, _ = io.ReadAll(r.Body)
		if n%2 == 1 { // every other request: the connection is cut
			conn, _, _ := w.(http.Hijacker).Hijack()
			_ = conn.Close()
			return
		}
		answer(202, "", `{"id":"m-1:sent","subscribers":1}`)(w)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Close() }()
	c, _ := newClient("http://" + ln.Addr().String())
	if _, err := c.Post(context.Background(), "shop", ev); err != nil {
		t.Errorf("with an id: %v", err)
	}
	noID := ev
	noID.ID = ""
	var apiErr *Error
	if _, err := c.Post(context.Background(), "shop", noID); err == nil || errors.As(err, &apiErr) {
		t.Errorf("without an id, a cut connection returned %v, want the transport error", err)
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("%d requests, want 3 (cut, retried; cut, not retried)", n)
	}
}

func TestACanceledContextStopsTheWait(t *testing.T) {
	s := &script{answers: []func(http.ResponseWriter){answer(503, "30", `{"error":{"code":"overloaded","message":"busy"}}`)}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	c := New(srv.URL, "tok")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Post(ctx, "shop", ev)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Errorf("%v after %s", err, time.Since(start))
	}
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != CodeOverloaded {
		t.Errorf("the error does not carry the last answer: %v", err)
	}
}

func TestTimestampIsRFC3339(t *testing.T) {
	e := ev
	e.Timestamp = time.Date(2026, 12, 7, 10, 0, 0, 500, time.UTC)
	b, err := json.Marshal(e)
	if err != nil || !strings.Contains(string(b), `"timestamp":"2026-12-07T10:00:00.0000005Z"`) {
		t.Errorf("%s %v", b, err)
	}
}
