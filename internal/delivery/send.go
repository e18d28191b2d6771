package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/store"
)

// sender makes the signed POSTs: deliveries, test deliveries and replays.
type sender struct {
	// transport is the HTTP client's (see Options.HTTPClient).
	transport http.RoundTripper
	// userAgent is the User-Agent header's value.
	userAgent []string
	// maxResponseBytes caps how much of a response body is read.
	maxResponseBytes int64
	// now stamps the signature.
	now func() time.Time
	// keepResponse keeps the response's headers and the first
	// store.LogResponseBodyBytes of its body, for the delivery log.
	keepResponse bool
}

// attemptResult is what one HTTP attempt produced.
type attemptResult struct {
	statusCode int
	retryAfter string
	duration   time.Duration
	err        error
	refused    bool
	// header and bodyHead are the response's headers and the start of its
	// body, kept only for the delivery log (sender.keepResponse).
	header   http.Header
	bodyHead []byte
}

func (r *attemptResult) succeeded() bool {
	return r.err == nil && r.statusCode >= 200 && r.statusCode < 300
}

// errorText describes a failed attempt for status and logs; it never
// contains the URL's query or any secret.
func (r *attemptResult) errorText(timeout time.Duration) string {
	switch {
	case r.err == nil && r.statusCode >= 300 && r.statusCode < 400:
		return fmt.Sprintf("receiver answered %d %s; redirects are not followed", r.statusCode, http.StatusText(r.statusCode))
	case r.err == nil:
		return fmt.Sprintf("receiver answered %d %s", r.statusCode, http.StatusText(r.statusCode))
	case r.refused:
		// Which address and rule refused it is for the manager's log and
		// metrics only: status must not tell whoever may create a
		// WebhookConfig what a name resolves to inside the cluster.
		return egressRefusedText
	case errors.Is(r.err, context.DeadlineExceeded):
		return fmt.Sprintf("no response within timeoutSeconds (%s)", timeout)
	default:
		var ue interface{ Unwrap() error }
		if errors.As(r.err, &ue) && ue.Unwrap() != nil {
			return "request failed: " + ue.Unwrap().Error()
		}
		return "request failed: " + r.err.Error()
	}
}

// send makes one signed POST of body to the endpoint. The request goes
// straight to the client's Transport: http.Client would add nothing used
// here but a copy of the headers and URL per request, kept for redirects,
// which are never followed (see NewHTTPClient), and Basic auth from a URL's
// user-info, which the API refuses.
func (s *sender) send(ctx context.Context, ep *endpoint.Endpoint, eventID string, body []byte) attemptResult {
	u, err := ep.RequestURL()
	if err != nil {
		return attemptResult{err: fmt.Errorf("building request: %w", err)}
	}
	ctx, cancel := context.WithTimeout(ctx, ep.Policy.Timeout)
	defer cancel()
	h := make(http.Header, 5)
	h["Content-Type"] = contentTypeJSON
	h["User-Agent"] = s.userAgent
	signing.SetHeaders(h, ep.Keys, eventID, s.now(), body)
	req := (&http.Request{
		Method: http.MethodPost, URL: u, Host: u.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		// A body the transport knows to be in memory (a *bytes.Reader in a
		// NopCloser) is written with the headers, in one write.
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		// A connection the receiver closed while idle is retried by the
		// transport only if it can read the body again.
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}).WithContext(ctx)
	start := time.Now()
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		// As http.Client reports it (any password redacted); errorText
		// leaves the URL out of status.
		err = &url.Error{Op: "Post", URL: u.Redacted(), Err: err}
		_, refused := IsEgressRefused(err)
		return attemptResult{err: err, refused: refused, duration: time.Since(start)}
	}
	r := attemptResult{statusCode: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if resp.ContentLength != 0 {
		body := io.LimitReader(resp.Body, s.maxResponseBytes)
		if s.keepResponse {
			head := make([]byte, min(store.LogResponseBodyBytes, s.maxResponseBytes))
			n, _ := io.ReadFull(body, head)
			r.bodyHead = head[:n]
		}
		_, _ = io.Copy(io.Discard, body)
	}
	_ = resp.Body.Close()
	if s.keepResponse {
		r.header = resp.Header
	}
	r.duration = time.Since(start)
	return r
}

// egressRefusedText is all status says of an attempt the egress policy refused.
const egressRefusedText = "refused by the egress policy"

// contentTypeJSON is every delivery's Content-Type header value; requests
// share it, and the transport only reads it.
var contentTypeJSON = []string{"application/json"}
