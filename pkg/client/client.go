// Package client posts events to the WA Blast webhook operator's ingestion
// API (docs/events.md, docs/openapi.json): one event, or a batch of up to
// 1,000 as NDJSON.
//
// It retries what the API says may be retried: 429 and 503, after the
// answer's Retry-After (capped by MaxBackoff), or after a capped, jittered
// exponential backoff when there is none. A request that may have reached
// the API without an answer (a connection reset, a timeout) is retried only
// when every event carries an id, because only then can the API tell the
// second post from a new event; give every event an id (the WhatsApp
// message id and its status make a natural one). Every other error is
// returned at once, as an *Error for an answer of the API.
//
//	c := client.New("http://webhook-operator-ingest.webhook-system:8082", token)
//	res, err := c.Post(ctx, "shop", client.Event{
//		ID: "msg-8f2c:delivered", Type: "message.delivered",
//		Data: json.RawMessage(`{"messageId":"msg-8f2c","sessionId":"s-1","to":"+6281234567890"}`),
//	})
//	var apiErr *client.Error
//	if errors.As(err, &apiErr) && apiErr.Code == client.CodeSchemaViolation { ... }
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The error codes of the ingestion API (docs/events.md lists them all).
const (
	CodeMalformedJSON        = "malformed_json"
	CodeInvalidEvent         = "invalid_event"
	CodeInvalidBatch         = "invalid_batch"
	CodeUnauthenticated      = "unauthenticated"
	CodeForbidden            = "forbidden"
	CodeEventTooLarge        = "event_too_large"
	CodeBatchTooLarge        = "batch_too_large"
	CodeUnknownEventType     = "unknown_event_type"
	CodeReservedEventType    = "reserved_event_type"
	CodeSchemaViolation      = "schema_violation"
	CodeTooManyRequests      = "too_many_requests"
	CodeStoreUnavailable     = "store_unavailable"
	CodeStoreFull            = "store_full"
	CodeOverloaded           = "overloaded"
	CodeAuthUnavailable      = "auth_unavailable"
	CodeUnsupportedMediaType = "unsupported_media_type"
)

// MaxBatchEvents is the most events a batch may hold.
const MaxBatchEvents = 1000

// Event is one event to post.
type Event struct {
	// ID is the idempotency key: posted again within the idempotency window
	// (24 hours by default), the event is accepted once and delivered once.
	// Empty: the API makes one, and a retried post is a new event.
	ID string `json:"id,omitempty"`
	// Type is the event type, such as "message.sent".
	Type string `json:"type"`
	// Timestamp is when the event happened; the time the API accepts it
	// when zero.
	Timestamp time.Time `json:"-"`
	// Data is the type's data object (its schema is in docs/events.md).
	Data json.RawMessage `json:"data"`
}

// MarshalJSON writes the event as the API takes it.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	v := struct {
		plain
		Timestamp string `json:"timestamp,omitempty"`
	}{plain: plain(e)}
	if !e.Timestamp.IsZero() {
		v.Timestamp = e.Timestamp.Format(time.RFC3339Nano)
	}
	return json.Marshal(v)
}

// Accepted is the API's answer for one event.
type Accepted struct {
	// ID is the event's id: the one posted, or the one the API made.
	ID string `json:"id"`
	// Subscribers is how many WebhookConfigs subscribe to the event's type
	// and, where they have a spec.filter, match the event.
	Subscribers int `json:"subscribers"`
	// Duplicate is true when the id was already accepted within the
	// idempotency window: the event is not delivered again.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Error is an answer of the API other than 202.
type Error struct {
	// StatusCode is the HTTP status, such as 422.
	StatusCode int
	// Code is the API's error code, such as CodeSchemaViolation.
	Code string
	// Message says what is wrong and how to fix it.
	Message string
	// Lines are the bad lines of a batch (1-based), and Details their errors.
	Lines   []int
	Details []LineError
	// Violations are a schema_violation's violations, each with its JSON
	// Pointer into data.
	Violations []Violation
	// RetryAfter is the answer's Retry-After (0 when absent).
	RetryAfter time.Duration
}

// Violation is one violation of an event type's schema.
type Violation struct {
	// Pointer is the JSON Pointer into data, such as "/to".
	Pointer string `json:"pointer"`
	Reason  string `json:"reason"`
}

// LineError is the error of one line of a batch.
type LineError struct {
	Line    int    `json:"line"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("ingestion API: %d %s: %s", e.StatusCode, e.Code, e.Message)
}

// Retryable reports whether posting the same request again may succeed:
// a 429 or a 503.
func (e *Error) Retryable() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusServiceUnavailable
}

// Client posts events. Its zero value is not usable; make one with New.
type Client struct {
	base  string
	token string
	// HTTPClient sends the requests (http.DefaultClient when nil). Give it a
	// timeout: a post is answered once the events are stored.
	HTTPClient *http.Client
	// MaxAttempts is how many times a request is sent at most (default 6;
	// 1 disables retries).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts (defaults
	// 500 ms and 30 s). A Retry-After over MaxBackoff is waited as MaxBackoff.
	MinBackoff, MaxBackoff time.Duration

	// sleep waits d or until ctx is done (tests replace it).
	sleep func(ctx context.Context, d time.Duration) error
}

// New returns a client of the ingestion API at baseURL (scheme, host and
// port, such as "http://webhook-operator-ingest.webhook-system:8082") that
// authenticates with token: a static ingest token, or a ServiceAccount
// token with the audience webhooks.wablast.io.
func New(baseURL, token string) *Client {
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, MaxAttempts: 6,
		MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second, sleep: sleepCtx}
}

// Post posts one event.
func (c *Client) Post(ctx context.Context, namespace string, e Event) (Accepted, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return Accepted{}, fmt.Errorf("encoding the event: %w", err)
	}
	var res Accepted
	err = c.do(ctx, namespace, "application/json", body, e.ID != "", &res)
	return res, err
}

// PostBatch posts events as one batch: all are accepted or none. The
// answers are in the order of events.
func (c *Client) PostBatch(ctx context.Context, namespace string, events []Event) ([]Accepted, error) {
	if len(events) == 0 || len(events) > MaxBatchEvents {
		return nil, fmt.Errorf("a batch holds 1 to %d events, not %d", MaxBatchEvents, len(events))
	}
	var buf bytes.Buffer
	withIDs := true
	for _, e := range events {
		line, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encoding event %q: %w", e.ID, err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
		withIDs = withIDs && e.ID != ""
	}
	var res struct {
		Events []Accepted `json:"events"`
	}
	if err := c.do(ctx, namespace, "application/x-ndjson", buf.Bytes(), withIDs, &res); err != nil {
		return nil, err
	}
	if len(res.Events) != len(events) {
		return nil, fmt.Errorf("ingestion API: %d answers for %d events", len(res.Events), len(events))
	}
	return res.Events, nil
}

// do sends the request until it is answered 202, it fails for good or the
// attempts are used up, and decodes the 202 body into out.
func (c *Client) do(ctx context.Context, namespace, contentType string, body []byte, idempotent bool, out any) error {
	u := c.base + "/v1/namespaces/" + url.PathEscape(namespace) + "/events"
	attempts := max(c.MaxAttempts, 1)
	var last error
	for attempt := 1; ; attempt++ {
		wait, err := c.once(ctx, u, contentType, body, out)
		if err == nil {
			return nil
		}
		last = err
		var apiErr *Error
		switch {
		case errors.As(err, &apiErr) && apiErr.Retryable():
		case !errors.As(err, &apiErr) && idempotent && ctx.Err() == nil:
			// No answer: the events may or may not be stored; their ids
			// make posting them again safe.
		default:
			return err
		}
		if attempt >= attempts {
			return fmt.Errorf("after %d attempts: %w", attempt, last)
		}
		if wait <= 0 {
			wait = c.backoff(attempt)
		}
		if err := c.sleep(ctx, min(wait, c.maxBackoff())); err != nil {
			return fmt.Errorf("%w (last attempt: %w)", err, last)
		}
	}
}

// once sends one request. wait is the answer's Retry-After.
func (c *Client) once(ctx context.Context, u, contentType string, body []byte, out any) (wait time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+c.token)
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(b, out); err != nil {
			return 0, fmt.Errorf("ingestion API: a 202 that is not the expected JSON: %w", err)
		}
		return 0, nil
	}
	apiErr := &Error{StatusCode: resp.StatusCode, Code: "unknown", Message: strings.TrimSpace(string(b))}
	var eb struct {
		Error struct {
			Code       string      `json:"code"`
			Message    string      `json:"message"`
			Lines      []int       `json:"lines"`
			Details    []LineError `json:"details"`
			Violations []Violation `json:"violations"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		apiErr.Code, apiErr.Message, apiErr.Lines, apiErr.Details, apiErr.Violations = eb.Error.Code, eb.Error.Message, eb.Error.Lines, eb.Error.Details, eb.Error.Violations
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		apiErr.RetryAfter = time.Duration(s) * time.Second
	}
	return apiErr.RetryAfter, apiErr
}

// backoff is the wait after the attempt-th failed attempt without a
// Retry-After: MinBackoff doubled each time, capped by MaxBackoff, then a
// random half to all of it ("equal jitter"), so that producers that failed
// together do not come back together.
func (c *Client) backoff(attempt int) time.Duration {
	d := max(c.MinBackoff, time.Millisecond)
	for i := 1; i < attempt && d < c.maxBackoff(); i++ {
		d *= 2
	}
	d = min(d, c.maxBackoff())
	return d/2 + rand.N(d/2+1)
}

func (c *Client) maxBackoff() time.Duration {
	if c.MaxBackoff <= 0 {
		return 30 * time.Second
	}
	return c.MaxBackoff
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
