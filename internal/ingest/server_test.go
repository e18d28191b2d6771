package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/store"
)

// fakeEnqueuer records what was enqueued and can be told to fail.
type fakeEnqueuer struct {
	mu    sync.Mutex
	calls [][]delivery.Event
	// err, when set, is returned by Enqueue (after recording the call).
	err error
	// duplicates are ids answered as duplicates.
	duplicates map[string]bool
	// subscribers is the Subscribers of every result.
	subscribers int
	// short drops the last result, to break the Enqueuer contract.
	short bool
	// block, when set, is waited for before answering.
	block chan struct{}
	// entered is closed when Enqueue is first called, if set.
	entered chan struct{}
}

func (f *fakeEnqueuer) Enqueue(ctx context.Context, events []delivery.Event) ([]delivery.EnqueueResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(events))
	entered, block, err := f.entered, f.block, f.err
	f.entered = nil
	f.mu.Unlock()
	if entered != nil {
		close(entered)
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	results := make([]delivery.EnqueueResult, 0, len(events))
	for _, e := range events {
		results = append(results, delivery.EnqueueResult{ID: e.ID, Subscribers: f.subscribers, Duplicate: f.duplicates[e.ID]})
	}
	if f.short {
		results = results[:len(results)-1]
	}
	return results, nil
}

func (f *fakeEnqueuer) enqueued() [][]delivery.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

var (
	testNow   = time.Date(2026, 11, 28, 10, 15, 2, 123e6, time.UTC)
	testToken = "test-token-0123456789"
)

// testServer is a Server with fakes, a fixed clock and sequential ids.
type testServer struct {
	*Server
	enq *fakeEnqueuer
	// authErr is returned by the authenticator for every token but
	// testToken, which is allowed.
	authErr error
}

func newTestServer(t *testing.T, mutate ...func(*Options)) *testServer {
	t.Helper()
	ts := &testServer{enq: &fakeEnqueuer{subscribers: 2}}
	var ids atomic.Int64
	opts := Options{
		Addr:     "127.0.0.1:0",
		Enqueuer: ts.enq,
		Auth: AuthenticatorFunc(func(_ context.Context, token, _ string) error {
			if ts.authErr != nil {
				return ts.authErr
			}
			if token != testToken {
				return fmt.Errorf("%w: unknown token", ErrUnauthenticated)
			}
			return nil
		}),
		MaxEventBytes: 4096,
		Now:           func() time.Time { return testNow },
		NewID:         func() string { return fmt.Sprintf("msg_gen%d", ids.Add(1)) },
	}
	for _, m := range mutate {
		m(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts.Server = s
	return ts
}

type request struct {
	method      string
	path        string
	contentType string
	body        string
	// bodyReader replaces body when set.
	bodyReader io.Reader
	// contentLength overrides the request's ContentLength when non-zero.
	contentLength int64
	// auth is the Authorization header; "-" for none; testToken when "".
	auth string
}

func (ts *testServer) do(t *testing.T, req request) *httptest.ResponseRecorder {
	t.Helper()
	if req.method == "" {
		req.method = http.MethodPost
	}
	if req.path == "" {
		req.path = "/v1/namespaces/shop/events"
	}
	var body io.Reader = strings.NewReader(req.body)
	if req.bodyReader != nil {
		body = req.bodyReader
	}
	r := httptest.NewRequest(req.method, req.path, body)
	if req.contentType != "" {
		r.Header.Set("Content-Type", req.contentType)
	}
	if req.contentLength != 0 {
		r.ContentLength = req.contentLength
	}
	switch req.auth {
	case "":
		r.Header.Set("Authorization", "Bearer "+testToken)
	case "-":
	default:
		r.Header.Set("Authorization", req.auth)
	}
	w := httptest.NewRecorder()
	ts.Handler().ServeHTTP(w, r)
	return w
}

// apiErrorBody is the decoded JSON error body.
type apiErrorBody struct {
	Error struct {
		Code       string              `json:"code"`
		Message    string              `json:"message"`
		Lines      []int               `json:"lines"`
		Details    []lineError         `json:"details"`
		Violations []catalog.Violation `json:"violations"`
	} `json:"error"`
}

// repeatsCode reports whether message starts by saying its code again
// before a colon: the code in words ("unauthenticated: ...", "not ready:
// ..."), or the text of the error the code was chosen by ("too many
// authentication attempts: ...").
func repeatsCode(code, message string) bool {
	lower := strings.ToLower(message)
	for _, prefix := range []string{strings.ReplaceAll(code, "_", " "), ErrUnauthenticated.Error(), ErrForbidden.Error(), ErrTooManyReviews.Error()} {
		if strings.HasPrefix(lower, prefix+":") {
			return true
		}
	}
	return false
}

func decodeError(t *testing.T, w *httptest.ResponseRecorder) apiErrorBody {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body apiErrorBody
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("error body is not {\"error\":{...}}: %v", err)
	}
	if body.Error.Code == "" || body.Error.Message == "" {
		t.Fatalf("error body without code or message: %+v", body)
	}
	return body
}

const (
	validData  = `{"messageId":"m1","sessionId":"s1","to":"+6281234567890"}`
	validEvent = `{"type":"message.sent","data":` + validData + `}`
)

// failingReader fails the test if the handler reads the body.
type failingReader struct{ read atomic.Bool }

func (r *failingReader) Read([]byte) (int, error) {
	r.read.Store(true)
	return 0, errors.New("the body must not be read")
}

func TestErrorsNameTheProblem(t *testing.T) {
	tests := map[string]struct {
		req     request
		authErr error
		enqErr  error
		short   bool
		status  int
		code    string
		message string
		// enqueued is whether Enqueue must have been called.
		enqueued bool
	}{
		"malformed JSON is a 400 naming the byte offset": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":{`},
			status: 400, code: CodeMalformedJSON, message: "malformed JSON at byte",
		},
		"an empty body is a 400": {
			req:    request{contentType: "application/json", body: "  \n"},
			status: 400, code: CodeMalformedJSON, message: "the body is empty",
		},
		"a JSON array instead of an event object is a 400": {
			req:    request{contentType: "application/json", body: `[` + validEvent + `]`},
			status: 400, code: CodeMalformedJSON, message: "must be a JSON object, got array",
		},
		"JSON null instead of an event object is a 400": {
			req:    request{contentType: "application/json", body: `null`},
			status: 400, code: CodeMalformedJSON, message: "must be a JSON object, got null",
		},
		"two events in one JSON body is a 400": {
			req:    request{contentType: "application/json", body: validEvent + validEvent},
			status: 400, code: CodeMalformedJSON, message: "malformed JSON",
		},
		"a body that is not UTF-8 is a 400": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":{"x":"` + "\xff" + `"}}`},
			status: 400, code: CodeMalformedJSON, message: "not valid UTF-8",
		},
		"a missing type is a 400": {
			req:    request{contentType: "application/json", body: `{"data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "type is required",
		},
		"an empty type is a 400": {
			req:    request{contentType: "application/json", body: `{"type":"","data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "type is required",
		},
		"a type that is not a string is a 400": {
			req:    request{contentType: "application/json", body: `{"type":7,"data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "type must be a string, got number",
		},
		"an unknown type is a 422 naming it and the known types": {
			req:    request{contentType: "application/json", body: `{"type":"message.read","data":` + validData + `}`},
			status: 422, code: CodeUnknownEventType, message: `unknown event type "message.read": the types are message.sent, message.delivered`,
		},
		"webhook.test posted by a client is a 422": {
			req:    request{contentType: "application/json", body: `{"type":"webhook.test","data":{"message":"hi","webhookConfig":"crm"}}`},
			status: 422, code: CodeReservedEventType, message: `"webhook.test" is reserved for test deliveries`,
		},
		"data violating the schema is a 422 naming the path": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":{"messageId":"m1","sessionId":"s1","to":"0812"}}`},
			status: 422, code: CodeSchemaViolation, message: "data does not match the message.sent schema at /to:",
		},
		"data missing a required property is a 422 naming it": {
			req:    request{contentType: "application/json", body: `{"type":"message.failed","data":` + validData + `}`},
			status: 422, code: CodeSchemaViolation, message: "at /error: required property is missing",
		},
		"missing data is a 400": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent"}`},
			status: 400, code: CodeInvalidEvent, message: "data is required",
		},
		"data that is not an object is a 422": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":["m1"]}`},
			status: 422, code: CodeSchemaViolation, message: "data must be a JSON object, got array",
		},
		"null data is a 422": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":null}`},
			status: 422, code: CodeSchemaViolation, message: "data must be a JSON object, got null",
		},
		"a duplicate name in data is a 422 naming it": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":{"messageId":"m1","sessionId":"s1","to":"+6281234567890","to":"not a number"}}`},
			status: 422, code: CodeSchemaViolation, message: `data has the member "to" twice in the object at /:`,
		},
		"a duplicate name written with an escape is a 422": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":{"messageId":"m1","sessionId":"s1","to":"+6281234567890","t\u006f":"x"}}`},
			status: 422, code: CodeSchemaViolation, message: `data has the member "to" twice in the object at /:`,
		},
		"a duplicate name deep inside data is a 422 naming its path": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":{"messageId":"m1","sessionId":"s1","to":"+6281234567890","x":[1,{"a/b":{"k":1,"k":2}}]}}`},
			status: 422, code: CodeSchemaViolation, message: `data has the member "k" twice in the object at /x/1/a~1b:`,
		},
		"an unknown top-level field is a 400 naming it": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":` + validData + `,"Data":{},"extra":1}`},
			status: 400, code: CodeInvalidEvent, message: `unknown top-level field "Data", "extra"`,
		},
		"an id with a forbidden character is a 400 naming its position": {
			req:    request{contentType: "application/json", body: `{"id":"order 17","type":"message.sent","data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "id has a forbidden character at position 6",
		},
		"an id over 256 characters is a 400": {
			req:    request{contentType: "application/json", body: `{"id":"` + strings.Repeat("a", 257) + `","type":"message.sent","data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "id is 257 characters long, the limit is 256",
		},
		"an empty id is a 400": {
			req:    request{contentType: "application/json", body: `{"id":"","type":"message.sent","data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "id must not be empty",
		},
		"a numeric id is a 400": {
			req:    request{contentType: "application/json", body: `{"id":17,"type":"message.sent","data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "id must be a string, got number",
		},
		"a timestamp that is not RFC 3339 is a 400 quoting it": {
			req:    request{contentType: "application/json", body: `{"timestamp":"28/11/2026","type":"message.sent","data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: `timestamp "28/11/2026" is not an RFC 3339 time`,
		},
		"a numeric timestamp is a 400": {
			req:    request{contentType: "application/json", body: `{"timestamp":1764324902,"type":"message.sent","data":` + validData + `}`},
			status: 400, code: CodeInvalidEvent, message: "timestamp must be an RFC 3339 string",
		},
		"a malformed event of an unknown type is a 400, not a 422": {
			req:    request{contentType: "application/json", body: `{"type":"nope","id":""}`},
			status: 400, code: CodeInvalidEvent, message: "id must not be empty",
		},
		"data that is not an object, of an unknown type, is a 422 for the type": {
			req:    request{contentType: "application/json", body: `{"type":"nope","data":[]}`},
			status: 422, code: CodeUnknownEventType, message: `unknown event type "nope"`,
		},
		"a wrong content type is a 415": {
			req:    request{contentType: "text/plain", body: validEvent},
			status: 415, code: CodeUnsupportedMediaType, message: `the Content-Type "text/plain" is not supported`,
		},
		"a missing content type is a 415": {
			req:    request{body: validEvent},
			status: 415, code: CodeUnsupportedMediaType, message: "the Content-Type header is missing",
		},
		"a charset other than UTF-8 is a 415": {
			req:    request{contentType: "application/json; charset=iso-8859-1", body: validEvent},
			status: 415, code: CodeUnsupportedMediaType, message: `charset "iso-8859-1" is not supported`,
		},
		"a malformed content type is a 415": {
			req:    request{contentType: "application/json; charset", body: validEvent},
			status: 415, code: CodeUnsupportedMediaType, message: "is malformed",
		},
		"a single event over the size limit is a 413": {
			req:    request{contentType: "application/json", body: `{"type":"message.sent","data":{"messageId":"` + strings.Repeat("x", 5000) + `"}}`, contentLength: -1},
			status: 413, code: CodeEventTooLarge, message: "the event is larger than the limit of 4096 bytes",
		},
		"a single event with a huge Content-Length is refused before reading": {
			req:    request{contentType: "application/json", bodyReader: &failingReader{}, contentLength: 1 << 40},
			status: 413, code: CodeEventTooLarge, message: "larger than the limit of 4096 bytes",
		},
		"a batch with a huge Content-Length is refused before reading": {
			req:    request{contentType: "application/x-ndjson", bodyReader: &failingReader{}, contentLength: 1 << 40},
			status: 413, code: CodeBatchTooLarge, message: "the batch is larger than the limit of 8388608 bytes for a batch body: split it",
		},
		"no Authorization header is a 401": {
			req:    request{contentType: "application/json", body: validEvent, auth: "-"},
			status: 401, code: CodeUnauthenticated, message: "no credentials",
		},
		"a Basic Authorization header is a 401": {
			req:    request{contentType: "application/json", body: validEvent, auth: "Basic dXNlcjpwYXNz"},
			status: 401, code: CodeUnauthenticated, message: "must use the Bearer scheme",
		},
		"an empty bearer token is a 401": {
			req:    request{contentType: "application/json", body: validEvent, auth: "Bearer "},
			status: 401, code: CodeUnauthenticated, message: "the bearer token is empty",
		},
		"a token the authenticator does not know is a 401": {
			req:    request{contentType: "application/json", body: validEvent, auth: "Bearer garbage"},
			status: 401, code: CodeUnauthenticated, message: "unknown token",
		},
		"a token not allowed in the namespace is a 403": {
			req:     request{contentType: "application/json", body: validEvent},
			authErr: fmt.Errorf("%w: not in namespace %q", ErrForbidden, "shop"),
			status:  403, code: CodeForbidden, message: `not in namespace "shop"`,
		},
		"an authenticator that cannot decide is a 503": {
			req:     request{contentType: "application/json", body: validEvent},
			authErr: errors.New("connection refused"),
			status:  503, code: CodeAuthUnavailable, message: "could not be checked",
		},
		"an invalid namespace is a 400": {
			req:    request{path: "/v1/namespaces/Shop_1/events", contentType: "application/json", body: validEvent},
			status: 400, code: CodeInvalidNamespace, message: `invalid namespace "Shop_1"`,
		},
		"an enqueue failure is a 503, never a 202": {
			req:    request{contentType: "application/json", body: validEvent},
			enqErr: fmt.Errorf("publishing: %w", store.ErrUnavailable),
			status: 503, code: CodeStoreUnavailable, message: "the event store did not acknowledge the events", enqueued: true,
		},
		"a full store is a 503 that says so": {
			req:    request{contentType: "application/json", body: validEvent},
			enqErr: store.ErrFull,
			status: 503, code: CodeStoreFull, message: "the event store is full", enqueued: true,
		},
		"an enqueue failure of a batch is a 503, never a 202": {
			req:    request{contentType: "application/x-ndjson", body: validEvent + "\n" + validEvent + "\n"},
			enqErr: errors.New("timeout"),
			status: 503, code: CodeStoreUnavailable, message: "retry later with the same ids", enqueued: true,
		},
		"an Enqueuer returning too few results is a 500": {
			req:   request{contentType: "application/json", body: validEvent},
			short: true, status: 500, code: CodeInternal, message: "inconsistently", enqueued: true,
		},
		"GET on the events path is a 405": {
			req:    request{method: http.MethodGet},
			status: 405, code: CodeMethodNotAllowed, message: "method GET is not allowed here; use POST",
		},
		"an unknown path is a 404": {
			req:    request{method: http.MethodGet, path: "/v2/events"},
			status: 404, code: CodeNotFound, message: `no such path "/v2/events"`,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t)
			ts.authErr = tc.authErr
			ts.enq.err = tc.enqErr
			ts.enq.short = tc.short
			w := ts.do(t, tc.req)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			body := decodeError(t, w)
			if body.Error.Code != tc.code || !strings.Contains(body.Error.Message, tc.message) {
				t.Errorf("error = %+v, want code %q and a message containing %q", body.Error, tc.code, tc.message)
			}
			if repeatsCode(body.Error.Code, body.Error.Message) {
				t.Errorf("the message %q repeats its code %q", body.Error.Message, body.Error.Code)
			}
			if got := len(ts.enq.enqueued()) > 0; got != tc.enqueued {
				t.Errorf("Enqueue called = %v, want %v", got, tc.enqueued)
			}
			if r, ok := tc.req.bodyReader.(*failingReader); ok && r.read.Load() {
				t.Error("the body was read")
			}
			if strings.Contains(w.Body.String(), testToken) {
				t.Error("the response contains the token")
			}
			switch tc.status {
			case 401:
				if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Errorf("WWW-Authenticate = %q", got)
				}
			case 405:
				if w.Header().Get("Allow") == "" {
					t.Error("no Allow header")
				}
			case 503:
				if w.Header().Get("Retry-After") == "" {
					t.Error("no Retry-After header")
				}
			}
		})
	}
}

// A schema violation's answer names every violation with its JSON Pointer,
// in the message and in "violations".
func TestSchemaViolationListsEveryViolation(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do(t, request{contentType: "application/json",
		body: `{"type":"message.failed","data":{"messageId":"","sessionId":"s1","to":"0812","error":{"code":7}}}`})
	if w.Code != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, body %s", w.Code, w.Body)
	}
	body := decodeError(t, w)
	var got []string
	for _, v := range body.Error.Violations {
		got = append(got, v.Pointer)
		if !strings.Contains(body.Error.Message, v.Pointer+": "+v.Reason) {
			t.Errorf("the message does not name %s: %s\n%s", v.Pointer, v.Reason, body.Error.Message)
		}
	}
	want := []string{"/error/code", "/error/message", "/messageId", "/to"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("violations %v, want %v (message %q)", got, want, body.Error.Message)
	}
	if !strings.Contains(body.Error.Message, "4 violations") || strings.Contains(body.Error.Message, "more") {
		t.Errorf("message %q", body.Error.Message)
	}
	// One violation: the pointer and reason, and the same in violations.
	w = ts.do(t, request{contentType: "application/json", body: `{"type":"message.sent","data":{"messageId":"m1","sessionId":"s1","to":"0812"}}`})
	body = decodeError(t, w)
	if len(body.Error.Violations) != 1 || body.Error.Violations[0].Pointer != "/to" {
		t.Errorf("violations %+v", body.Error.Violations)
	}
}

func TestAcceptedEvent(t *testing.T) {
	tests := map[string]struct {
		body        string
		contentType string
		duplicate   bool
		wantID      string
		wantKey     bool
		wantTime    time.Time
	}{
		"an id given is passed through as an idempotency key": {
			body:   `{"id":"order-17:sent","type":"message.sent","data":` + validData + `}`,
			wantID: "order-17:sent", wantKey: true, wantTime: testNow,
		},
		"an absent id is generated and is not an idempotency key": {
			body:   `{"type":"message.sent","data":` + validData + `}`,
			wantID: "msg_gen1", wantKey: false, wantTime: testNow,
		},
		"a null id counts as absent": {
			body:   `{"id":null,"type":"message.sent","data":` + validData + `}`,
			wantID: "msg_gen1", wantKey: false, wantTime: testNow,
		},
		"a timestamp given is used": {
			body:   `{"type":"message.sent","timestamp":"2026-11-28T17:15:02.5+07:00","data":` + validData + `}`,
			wantID: "msg_gen1", wantTime: time.Date(2026, 11, 28, 10, 15, 2, 5e8, time.UTC),
		},
		"a charset parameter is accepted": {
			body: validEvent, contentType: "application/json; charset=UTF-8",
			wantID: "msg_gen1", wantTime: testNow,
		},
		"a duplicate is accepted and flagged": {
			body:      `{"id":"order-17","type":"message.sent","data":` + validData + `}`,
			duplicate: true, wantID: "order-17", wantKey: true, wantTime: testNow,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t)
			if tc.duplicate {
				ts.enq.duplicates = map[string]bool{tc.wantID: true}
			}
			if tc.contentType == "" {
				tc.contentType = "application/json"
			}
			w := ts.do(t, request{contentType: tc.contentType, body: tc.body})
			if w.Code != http.StatusAccepted {
				t.Fatalf("status = %d; body %s", w.Code, w.Body)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{"id": tc.wantID, "subscribers": 2.0}
			if tc.duplicate {
				want["duplicate"] = true
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("body = %v, want %v", got, want)
			}
			calls := ts.enq.enqueued()
			if len(calls) != 1 || len(calls[0]) != 1 {
				t.Fatalf("Enqueue calls = %v, want one with one event", calls)
			}
			ev := calls[0][0]
			if ev.ID != tc.wantID || ev.IdempotencyKey != tc.wantKey || ev.Namespace != "shop" ||
				ev.Type != "message.sent" || !ev.Timestamp.Equal(tc.wantTime) {
				t.Errorf("event = %+v", ev)
			}
			if string(ev.Data) != validData {
				t.Errorf("data = %s, want %s", ev.Data, validData)
			}
		})
	}
}

func TestDataIsCompacted(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do(t, request{contentType: "application/json", body: "{\"type\": \"message.sent\",\n \"data\": {\n  \"messageId\": \"m1\", \"sessionId\": \"s1\",\n  \"to\": \"+6281234567890\", \"extra\": {\"a\": [1, 2]}\n}}"})
	if w.Code != http.StatusAccepted {
		t.Fatalf("status = %d; body %s", w.Code, w.Body)
	}
	want := `{"messageId":"m1","sessionId":"s1","to":"+6281234567890","extra":{"a":[1,2]}}`
	if got := string(ts.enq.enqueued()[0][0].Data); got != want {
		t.Errorf("data = %s, want %s", got, want)
	}
}

func TestDefaultIDs(t *testing.T) {
	re := regexp.MustCompile(`^msg_[A-Za-z0-9]{27}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewEventID()
		if !re.MatchString(id) {
			t.Fatalf("NewEventID() = %q", id)
		}
		if seen[id] {
			t.Fatalf("NewEventID() repeated %q", id)
		}
		seen[id] = true
	}

	ts := newTestServer(t, func(o *Options) { o.NewID = nil })
	if w := ts.do(t, request{contentType: "application/json", body: validEvent}); w.Code != http.StatusAccepted {
		t.Fatalf("status = %d; body %s", w.Code, w.Body)
	}
	if ev := ts.enq.enqueued()[0][0]; !re.MatchString(ev.ID) || ev.IdempotencyKey {
		t.Errorf("event = %+v, want a generated msg_ id", ev)
	}
}

// ndjson joins lines with "\n".
func ndjson(lines ...string) string {
	return strings.Join(lines, "\n") + "\n"
}

func sentEvent(i int) string {
	return fmt.Sprintf(`{"id":"evt-%d","type":"message.sent","data":{"messageId":"m%d","sessionId":"s1","to":"+6281234567890"}}`, i, i)
}

func TestBatchOf500IsOneEnqueueInOrder(t *testing.T) {
	ts := newTestServer(t)
	var lines []string
	for i := range 500 {
		lines = append(lines, sentEvent(i))
	}
	w := ts.do(t, request{contentType: "application/x-ndjson", body: ndjson(lines...)})
	if w.Code != http.StatusAccepted {
		t.Fatalf("status = %d; body %s", w.Code, w.Body)
	}
	calls := ts.enq.enqueued()
	if len(calls) != 1 || len(calls[0]) != 500 {
		t.Fatalf("got %d Enqueue calls, want one with 500 events", len(calls))
	}
	for i, ev := range calls[0] {
		if ev.ID != fmt.Sprintf("evt-%d", i) || !ev.IdempotencyKey || ev.Namespace != "shop" {
			t.Fatalf("event %d = %+v", i, ev)
		}
	}
	var body struct {
		Events   []delivery.EnqueueResult `json:"events"`
		Accepted int                      `json:"accepted"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Accepted != 500 || len(body.Events) != 500 || body.Events[499].ID != "evt-499" || body.Events[0].Subscribers != 2 {
		t.Errorf("body: accepted %d, %d events", body.Accepted, len(body.Events))
	}
}

func TestBatch(t *testing.T) {
	oversize := `{"type":"message.sent","data":{"messageId":"` + strings.Repeat("x", 5000) + `"}}`
	tests := map[string]struct {
		body        string
		contentType string
		status      int
		code        string
		message     string
		lines       []int
		lineCodes   []string
		wantIDs     []string
	}{
		"bad lines are all named and nothing is enqueued": {
			body: ndjson(sentEvent(1), sentEvent(2), `{"type":"foo","data":{}}`, sentEvent(4),
				`{"type":"message.sent","data":`, sentEvent(6), `{"type":"message.sent","data":{"messageId":"m","sessionId":"s","to":"x"}}`),
			status: 400, code: CodeInvalidBatch,
			message:   `line 3: unknown event type "foo"`,
			lines:     []int{3, 5, 7},
			lineCodes: []string{CodeUnknownEventType, CodeMalformedJSON, CodeSchemaViolation},
		},
		"line numbers count blank lines": {
			body:   "\n" + sentEvent(1) + "\n\n" + `{"type":"webhook.test","data":{"message":"x","webhookConfig":"y"}}` + "\n",
			status: 400, code: CodeInvalidBatch, message: "line 4: event type \"webhook.test\" is reserved",
			lines: []int{4}, lineCodes: []string{CodeReservedEventType},
		},
		"a line over the size limit is a bad line": {
			body:   ndjson(sentEvent(1), oversize, sentEvent(3)),
			status: 400, code: CodeInvalidBatch, message: "line 2: the event is larger than the limit of 4096 bytes",
			lines: []int{2}, lineCodes: []string{CodeEventTooLarge},
		},
		"an unterminated line over the size limit is a bad line": {
			body:   sentEvent(1) + "\n" + oversize,
			status: 400, code: CodeInvalidBatch, message: "line 2: the event is larger",
			lines: []int{2}, lineCodes: []string{CodeEventTooLarge},
		},
		"an unknown top-level field on a line is named": {
			body:   ndjson(`{"type":"message.sent","data":` + validData + `,"foo":1}`),
			status: 400, code: CodeInvalidBatch, message: `line 1: unknown top-level field "foo"`,
			lines: []int{1}, lineCodes: []string{CodeInvalidEvent},
		},
		"a batch of only blank lines is a 400": {
			body:   "\n \n\r\n",
			status: 400, code: CodeInvalidBatch, message: "the batch holds no events",
		},
		"an empty batch is a 400": {
			body:   "",
			status: 400, code: CodeInvalidBatch, message: "the batch holds no events",
		},
		"more than 1000 events is a 413": {
			body:   strings.Repeat(validEvent+"\n", 1001),
			status: 413, code: CodeBatchTooLarge, message: "more than 1000 events",
		},
		"CRLF line endings and a last line without newline are accepted": {
			body:    sentEvent(1) + "\r\n\r\n" + sentEvent(2),
			status:  202,
			wantIDs: []string{"evt-1", "evt-2"},
		},
		"exactly 1000 events are accepted": {
			body:   strings.Repeat(validEvent+"\n", 1000),
			status: 202,
		},
		"application/ndjson is accepted too": {
			body: ndjson(sentEvent(1)), contentType: "application/ndjson",
			status: 202, wantIDs: []string{"evt-1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t)
			if tc.contentType == "" {
				tc.contentType = "application/x-ndjson"
			}
			w := ts.do(t, request{contentType: tc.contentType, body: tc.body})
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %.500s", w.Code, tc.status, w.Body)
			}
			calls := ts.enq.enqueued()
			if tc.status != http.StatusAccepted {
				if len(calls) != 0 {
					t.Errorf("%d Enqueue calls for a refused batch", len(calls))
				}
				body := decodeError(t, w)
				if body.Error.Code != tc.code || !strings.Contains(body.Error.Message, tc.message) {
					t.Errorf("error = %+v, want code %q and a message containing %q", body.Error, tc.code, tc.message)
				}
				if !slices.Equal(body.Error.Lines, tc.lines) {
					t.Errorf("lines = %v, want %v", body.Error.Lines, tc.lines)
				}
				var codes []string
				for _, d := range body.Error.Details {
					codes = append(codes, d.Code)
				}
				if !slices.Equal(codes, tc.lineCodes) {
					t.Errorf("line codes = %v, want %v", codes, tc.lineCodes)
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("%d Enqueue calls, want 1", len(calls))
			}
			if tc.wantIDs != nil {
				var ids []string
				for _, ev := range calls[0] {
					ids = append(ids, ev.ID)
				}
				if !slices.Equal(ids, tc.wantIDs) {
					t.Errorf("ids = %v, want %v", ids, tc.wantIDs)
				}
			}
		})
	}
}

func TestBatchErrorIsBounded(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do(t, request{contentType: "application/x-ndjson", body: strings.Repeat(`{"type":"nope","data":{}}`+"\n", 1000)})
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status = %d", w.Code)
	}
	body := decodeError(t, w)
	if len(body.Error.Lines) != 1000 || len(body.Error.Details) != maxLineErrorsInDetails {
		t.Errorf("%d lines, %d details", len(body.Error.Lines), len(body.Error.Details))
	}
	if !strings.Contains(body.Error.Message, "line 10: ") || strings.Contains(body.Error.Message, "line 11: ") ||
		!strings.Contains(body.Error.Message, "and 990 more bad lines") {
		t.Errorf("message = %.300s", body.Error.Message)
	}
}

func TestBatchBodyOverTheLimitIsRefused(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxEventBytes, o.MaxBatchBytes = 100, 100*1000 })
	// 1001 blank-padded lines of 100 bytes each exceed MaxBatchBytes with
	// their newlines; the limit is hit while reading.
	w := ts.do(t, request{contentType: "application/x-ndjson", body: strings.Repeat(strings.Repeat(" ", 100)+"\n", 1001), contentLength: -1})
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d; body %s", w.Code, w.Body)
	}
	if body := decodeError(t, w); body.Error.Code != CodeBatchTooLarge {
		t.Errorf("code = %q", body.Error.Code)
	}
}

func TestEventTypes(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do(t, request{method: http.MethodGet, path: "/v1/event-types", auth: "-"})
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status = %d, Content-Type %q", w.Code, w.Header().Get("Content-Type"))
	}
	var body struct {
		EventTypes []struct {
			Type        string          `json:"type"`
			Description string          `json:"description"`
			Schema      json.RawMessage `json:"schema"`
			Example     json.RawMessage `json:"example"`
			Reserved    bool            `json:"reserved"`
		} `json:"eventTypes"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, et := range body.EventTypes {
		names = append(names, et.Type)
		typ, ok := catalog.Lookup(et.Type)
		if !ok || et.Description != typ.Description || len(et.Schema) == 0 || et.Reserved != typ.Reserved {
			t.Errorf("entry %s does not match the catalog", et.Type)
		}
		if err := typ.Validate(et.Example); err != nil {
			t.Errorf("example of %s: %v", et.Type, err)
		}
	}
	if !slices.Equal(names, catalog.Names()) {
		t.Errorf("types = %v", names)
	}
}

func TestProbes(t *testing.T) {
	var notReady atomic.Value
	notReady.Store("")
	ts := newTestServer(t, func(o *Options) {
		o.Ready = func() error {
			if r := notReady.Load().(string); r != "" {
				return errors.New(r)
			}
			return nil
		}
	})
	for _, path := range []string{"/healthz", "/readyz"} {
		if w := ts.do(t, request{method: http.MethodGet, path: path, auth: "-"}); w.Code != http.StatusOK {
			t.Errorf("GET %s = %d", path, w.Code)
		}
	}
	notReady.Store("event store not connected")
	if w := ts.do(t, request{method: http.MethodGet, path: "/healthz", auth: "-"}); w.Code != http.StatusOK {
		t.Errorf("GET /healthz = %d while not ready", w.Code)
	}
	w := ts.do(t, request{method: http.MethodGet, path: "/readyz", auth: "-"})
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("GET /readyz = %d while not ready", w.Code)
	}
	if body := decodeError(t, w); body.Error.Code != CodeNotReady || body.Error.Message != "event store not connected" {
		t.Errorf("error = %+v", body.Error)
	}
}

func TestNewRequiresEnqueuerAndAuth(t *testing.T) {
	tests := map[string]Options{
		"no Enqueuer":           {Auth: AuthenticatorFunc(func(context.Context, string, string) error { return nil })},
		"no Authenticator":      {Enqueuer: &fakeEnqueuer{}},
		"a negative size limit": {Enqueuer: &fakeEnqueuer{}, Auth: AuthenticatorFunc(func(context.Context, string, string) error { return nil }), MaxEventBytes: -1},
	}
	for name, opts := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := New(opts); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
	s, err := New(Options{Enqueuer: &fakeEnqueuer{}, Auth: AuthenticatorFunc(func(context.Context, string, string) error { return nil })})
	if err != nil {
		t.Fatal(err)
	}
	if s.opts.Addr != ":8082" || s.opts.MaxEventBytes != 262144 || s.NeedLeaderElection() {
		t.Errorf("defaults: addr %q, max %d, leader election %v", s.opts.Addr, s.opts.MaxEventBytes, s.NeedLeaderElection())
	}
}

func TestStartServesAndShutsDownGracefully(t *testing.T) {
	ts := newTestServer(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	ts.enq.block, ts.enq.entered = release, entered

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.Start(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for ts.Addr() == "" {
		if time.Now().After(deadline) {
			t.Fatal("not listening after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := "http://" + ts.Addr()

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz = %d", resp.StatusCode)
	}

	// An in-flight request is finished after the context is cancelled.
	type result struct {
		status int
		err    error
	}
	inflight := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/namespaces/shop/events", strings.NewReader(validEvent))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		inflight <- result{status: resp.StatusCode}
	}()
	<-entered
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Start returned %v with a request in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if r := <-inflight; r.err != nil || r.status != http.StatusAccepted {
		t.Fatalf("in-flight request: status %d, err %v", r.status, r.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after shutdown")
	}
	if resp, err := http.Get(base + "/healthz"); err == nil {
		_ = resp.Body.Close()
		t.Error("still serving after shutdown")
	}
	if err := ts.Start(context.Background()); err == nil {
		t.Error("a second Start succeeded")
	}
}

func TestStartFailsOnABusyAddress(t *testing.T) {
	first := newTestServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start = %v", err)
		}
	}()
	for first.Addr() == "" {
		time.Sleep(10 * time.Millisecond)
	}
	second := newTestServer(t, func(o *Options) { o.Addr = first.Addr() })
	if err := second.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "listening on") {
		t.Fatalf("Start = %v, want a listen error", err)
	}
}

func TestSlowClientsAreTimedOut(t *testing.T) {
	cases := map[string]string{
		"a client that never finishes its headers is dropped": "POST /v1/namespaces/shop/events HTTP/1.1\r\nHost: x\r\n",
		"a client that never finishes its body is dropped": "POST /v1/namespaces/shop/events HTTP/1.1\r\nHost: x\r\n" +
			"Authorization: Bearer " + testToken + "\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":",
	}
	for name, partial := range cases {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t)
			ts.readHeaderTimeout, ts.readTimeout = 300*time.Millisecond, 300*time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { _ = ts.Start(ctx) }()
			for ts.Addr() == "" {
				time.Sleep(10 * time.Millisecond)
			}
			conn, err := net.Dial("tcp", ts.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = conn.Close() }()
			if _, err := conn.Write([]byte(partial)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.ReadAll(conn) // returns when the server closes the connection
			if took := time.Since(start); took > 3*time.Second {
				t.Fatalf("the slow client was kept for %s", took)
			}
			if len(ts.enq.enqueued()) != 0 {
				t.Error("a partial request was enqueued")
			}
		})
	}
}

// Every log line about a request names its namespace, whether the request
// was refused, failed to be stored or was accepted.
func TestRequestLogsNameTheNamespace(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{Verbosity: 1})
	ts := newTestServer(t, func(o *Options) { o.Logger = log })
	// Served by Start, whose requests get the logger from BaseContext.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start = %v", err)
		}
	}()
	for deadline := time.Now().Add(10 * time.Second); ts.Addr() == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not listening after 10s")
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+ts.Addr()+"/v1/namespaces/shop/events", strings.NewReader(validEvent))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST through Start = %d", resp.StatusCode)
	}
	mu.Lock()
	served := slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, `"msg"="Accepted events"`) && strings.Contains(l, `"namespace"="shop"`)
	})
	lines = nil
	mu.Unlock()
	if !served {
		t.Error(`a request served by Start logged no "Accepted events" line`)
	}

	// Served by Handler.
	ts.do(t, request{path: "/v1/namespaces/shop/events", contentType: "application/json", body: validEvent})
	ts.do(t, request{path: "/v1/namespaces/shop/events", contentType: "application/json", body: validEvent, auth: "Bearer wrong"})
	ts.enq.mu.Lock()
	ts.enq.err = errors.New("store down")
	ts.enq.mu.Unlock()
	ts.do(t, request{path: "/v1/namespaces/shop/events", contentType: "application/json", body: validEvent})
	ts.authErr = errors.New("API server unreachable")
	ts.do(t, request{path: "/v1/namespaces/shop/events", contentType: "application/json", body: validEvent})
	mu.Lock()
	defer mu.Unlock()
	for _, msg := range []string{"Accepted events", "Refused events", "Enqueueing events failed", "Authorization check failed"} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, `"msg"="`+msg+`"`) {
				found = true
				if !strings.Contains(l, `"namespace"="shop"`) {
					t.Errorf("%q does not name the namespace: %s", msg, l)
				}
			}
		}
		if !found {
			t.Errorf("no %q line in %q", msg, lines)
		}
	}
}
