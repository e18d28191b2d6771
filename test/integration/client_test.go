package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	vErrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/wablast/webhook-operator/internal/ingest"
	"github.com/wablast/webhook-operator/internal/testutil"
	"github.com/wablast/webhook-operator/pkg/client"
)

// openAPIChecker is an http.RoundTripper that checks every request it
// sends and every response it gets against the OpenAPI document the
// server itself serves (GET /v1/openapi.json).
type openAPIChecker struct {
	t       *testing.T
	v       validator.Validator
	mu      sync.Mutex
	checked int
	// invalidRequests are sent on purpose: only their responses are checked.
	invalidRequests bool
}

func newOpenAPIChecker(t *testing.T, ingestAddr string) *openAPIChecker {
	t.Helper()
	resp, err := http.Get("http://" + ingestAddr + ingest.OpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	served, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %d %s %v", ingest.OpenAPIPath, resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	doc, err := libopenapi.NewDocument(served)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("the served document is not valid OpenAPI: %v", verrs[0].Message)
	}
	return &openAPIChecker{t: t, v: v}
}

func (c *openAPIChecker) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		_ = req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	rb, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	// The validator reads the bodies: give it copies.
	vreq := req.Clone(context.Background())
	vreq.Body = io.NopCloser(bytes.NewReader(body))
	vresp := *resp
	vresp.Body = io.NopCloser(bytes.NewReader(rb))
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked++
	if !c.invalidRequests && req.Header.Get("Content-Type") == "application/json" {
		if ok, errs := c.v.ValidateHttpRequest(vreq); !ok {
			c.t.Errorf("request %s %s (%.200s) is not valid by the OpenAPI document: %s", req.Method, req.URL.Path, body, openAPIErrors(errs))
		}
		vreq.Body = io.NopCloser(bytes.NewReader(body))
	}
	if ok, errs := c.v.ValidateHttpResponse(vreq, &vresp); !ok {
		c.t.Errorf("response %d to %s %s (%.300s) is not valid by the OpenAPI document: %s", resp.StatusCode, req.Method, req.URL.Path, rb, openAPIErrors(errs))
	}
	return resp, nil
}

func openAPIErrors(errs []*vErrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "%s (%s); ", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "[%s at %s] ", se.Reason, se.FieldPath)
		}
	}
	return b.String()
}

// The Go client against the real ingestion API: single events and batches
// arrive with their content, a repeated id is a duplicate, API errors are
// typed, a 503 with Retry-After is retried; every request and response on
// the way is valid by the OpenAPI document the server serves.
func TestTheGoClientAgainstTheIngestionAPI(t *testing.T) {
	ns := env.Namespace(t)
	r := startOperator(t, ns, t.TempDir())
	createIngestToken(t, ns)
	ledger := testutil.NewLedger()
	rc := newRecordingReceiver(t, ledger, http.StatusOK)
	createEndpoint(t, ns, "crm", rc.URL, 3)
	waitReady(t, ns, "crm")
	addr := r.op.Ingest.Addr()
	checker := newOpenAPIChecker(t, addr)
	c := client.New("http://"+addr, ingestToken)
	c.HTTPClient = &http.Client{Transport: checker, Timeout: 30 * time.Second}
	ctx := context.Background()

	toEvent := func(p testutil.Posted) client.Event {
		e := client.Event{ID: p.ID, Type: p.Type, Data: p.Data}
		if p.Timestamp != "" {
			ts, err := time.Parse(time.RFC3339Nano, p.Timestamp)
			if err != nil {
				t.Fatal(err)
			}
			e.Timestamp = ts
			// What the client sends is what the ledger must expect.
		}
		return e
	}
	record := func(p testutil.Posted, e client.Event) testutil.Posted {
		if !e.Timestamp.IsZero() {
			p.Timestamp = e.Timestamp.Format(time.RFC3339Nano)
		}
		return p
	}

	// One event.
	one := testutil.VariedEvent("go-client", 1)
	e := toEvent(one)
	ledger.Add(record(one, e))
	res, err := c.Post(ctx, ns, e)
	if err != nil || res.ID != one.ID || res.Subscribers != 1 || res.Duplicate {
		t.Fatalf("Post: %+v %v", res, err)
	}
	// The same id again: a duplicate, not delivered twice.
	if res, err := c.Post(ctx, ns, e); err != nil || !res.Duplicate {
		t.Fatalf("Post again: %+v %v, want a duplicate", res, err)
	}

	// A batch.
	batch := make([]client.Event, 50)
	for i := range batch {
		p := testutil.VariedEvent("go-client-batch", i)
		batch[i] = toEvent(p)
		ledger.Add(record(p, batch[i]))
	}
	got, err := c.PostBatch(ctx, ns, batch)
	if err != nil || len(got) != 50 {
		t.Fatalf("PostBatch: %d answers, %v", len(got), err)
	}
	for i, a := range got {
		if a.ID != batch[i].ID {
			t.Errorf("answer %d is for %s, want %s", i, a.ID, batch[i].ID)
		}
	}

	// Typed errors, not retried.
	bad := client.Event{ID: "go-bad", Type: "message.sent", Data: json.RawMessage(`{"messageId":"m-1","sessionId":"s-1","to":"0812"}`)}
	var apiErr *client.Error
	checker.invalidRequests = true
	if _, err := c.Post(ctx, ns, bad); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnprocessableEntity || apiErr.Code != client.CodeSchemaViolation || !strings.Contains(apiErr.Message, "/to") || len(apiErr.Violations) != 1 || apiErr.Violations[0].Pointer != "/to" {
		t.Errorf("a schema violation: %v", err)
	}
	if _, err := c.PostBatch(ctx, ns, []client.Event{batch[0], {ID: "go-x", Type: "message.read", Data: json.RawMessage(`{}`)}}); !errors.As(err, &apiErr) || apiErr.Code != client.CodeInvalidBatch || len(apiErr.Lines) != 1 || apiErr.Lines[0] != 2 {
		t.Errorf("a bad batch line: %v", err)
	}
	wrong := client.New("http://"+addr, "not-a-token-of-this-namespace-0123456789")
	wrong.HTTPClient = c.HTTPClient
	if _, err := wrong.Post(ctx, ns, e); !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != client.CodeUnauthenticated {
		t.Errorf("an unknown token: %v", err)
	}
	checker.invalidRequests = false

	// A 503 with Retry-After (from a proxy in front of the API, as a load
	// balancer in front of a manager that restarts would answer) is waited
	// out and posted again.
	proxyURL, refused := refuseOnceProxy(t, addr)
	viaProxy := client.New(proxyURL, ingestToken)
	viaProxy.HTTPClient = c.HTTPClient
	retried := testutil.VariedEvent("go-client-retried", 7)
	re := toEvent(retried)
	ledger.Add(record(retried, re))
	start := time.Now()
	if res, err := viaProxy.Post(ctx, ns, re); err != nil || res.ID != retried.ID || res.Duplicate {
		t.Fatalf("Post through a 503: %+v %v", res, err)
	}
	if n := refused.Load(); n != 2 || time.Since(start) < time.Second {
		t.Errorf("%d requests in %s, want 2 with the Retry-After of 1 s between them", n, time.Since(start))
	}

	// Everything accepted arrives once, with the content posted.
	checkDeliveredOnce(t, ns, "crm", rc, ledger.IDs())
	if checker.checked < 6 {
		t.Errorf("only %d exchanges were checked against the OpenAPI document", checker.checked)
	}
}

func netListen(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

// checkDeliveredOnce waits until the status of WebhookConfig name says every
// event of want was delivered and nothing is pending, then checks that rc
// got each exactly once, with the content posted.
func checkDeliveredOnce(t *testing.T, ns, name string, rc *recordingReceiver, want []string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		if st := getWHC(t, ns, name).Status; st.EventsDelivered != int64(len(want)) || st.EventsPending != 0 {
			return fmt.Errorf("delivered %d pending %d, want %d", st.EventsDelivered, st.EventsPending, len(want))
		}
		return nil
	})
	for _, id := range want {
		if n := rc.count(func(got, _ string) bool { return got == id }); n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	rc.checkContent(t, want)
}
