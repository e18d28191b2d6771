package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/textutil"
)

const (
	mediaTypeJSON   = "application/json"
	mediaTypeNDJSON = "application/x-ndjson"
	// mediaTypeNDJSONAlias is the newer registration of the same format.
	mediaTypeNDJSONAlias = "application/ndjson"

	// maxLineErrorsInMessage and maxLineErrorsInDetails bound the error of
	// a bad batch; "lines" always lists every bad line.
	maxLineErrorsInMessage = 10
	maxLineErrorsInDetails = 100
)

// routes builds the API's mux.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/namespaces/{namespace}/events", s.handleEvents)
	mux.HandleFunc("/v1/namespaces/{namespace}/events", methodNotAllowed("POST"))
	mux.HandleFunc("GET /v1/event-types", s.handleEventTypes)
	mux.HandleFunc("/v1/event-types", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("GET "+OpenAPIPath, s.handleOpenAPI)
	mux.HandleFunc(OpenAPIPath, methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("/healthz", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.HandleFunc("/readyz", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no such path %q", textutil.Truncate(r.URL.Path, 128))))
	})
	return mux
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			fmt.Sprintf("method %s is not allowed here; use %s", textutil.Truncate(r.Method, 16), allow)))
	}
}

// acceptedEvent is the 202 body of one event.
type acceptedEvent = delivery.EnqueueResult

// acceptedBatch is the 202 body of a batch.
type acceptedBatch struct {
	Events   []delivery.EnqueueResult `json:"events"`
	Accepted int                      `json:"accepted"`
}

// acceptedBody is json.Marshal(r), built without reflection for the ids
// the API accepts or generates, which need no escaping; for other ids it
// returns false.
func acceptedBody(r acceptedEvent) ([]byte, bool) {
	if validateID(r.ID) != nil {
		return nil, false
	}
	body := make([]byte, 0, len(`{"id":"","subscribers":,"duplicate":true}`)+len(r.ID)+20)
	body = append(body, `{"id":"`...)
	body = append(body, r.ID...)
	body = append(body, `","subscribers":`...)
	body = strconv.AppendInt(body, int64(r.Subscribers), 10)
	if r.Duplicate {
		body = append(body, `,"duplicate":true`...)
	}
	return append(body, '}'), true
}

// handleEvents serves POST /v1/namespaces/{namespace}/events.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	namespace := r.PathValue("namespace")
	// The request's context carries the logger (see Start and Handler). The
	// namespace goes into each log call rather than through WithValues,
	// which would cost every request a logger copy even when nothing is logged.
	apiErr := s.serveEvents(r.Context(), w, r, namespace)
	if apiErr == nil {
		s.opts.Metrics.answered(http.StatusAccepted)
		return
	}
	s.opts.Metrics.answered(apiErr.status)
	if apiErr.status == http.StatusUnauthorized {
		challenge := `Bearer realm="webhook-operator"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	switch {
	case apiErr.retryAfter > 0:
		w.Header().Set("Retry-After", strconv.Itoa(apiErr.retryAfter))
	case apiErr.status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(defaultRetryAfter))
	}
	s.log.V(1).Info("Refused events", "namespace", namespace, "status", apiErr.status, "code", apiErr.code)
	writeError(w, apiErr)
}

// isDNS1123Label is validation.IsDNS1123Label(s) == nil without its
// regular expression: at most 63 lowercase letters, digits and '-', starting
// and ending with a letter or digit.
func isDNS1123Label(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// serveEvents authorizes, decodes and enqueues. It writes the 202 itself and
// returns nil, or returns the error to answer.
func (s *Server) serveEvents(ctx context.Context, w http.ResponseWriter, r *http.Request, namespace string) *apiError {
	if !isDNS1123Label(namespace) {
		errs := validation.IsDNS1123Label(namespace)
		return newError(http.StatusBadRequest, CodeInvalidNamespace,
			fmt.Sprintf("invalid namespace %q: %s", textutil.Truncate(namespace, 64), strings.Join(errs, "; ")))
	}
	token, apiErr := bearerToken(r)
	if apiErr != nil {
		return apiErr
	}
	if err := s.opts.Auth.Authorize(ctx, token, namespace); err != nil {
		return s.authError(ctx, err, namespace)
	}

	mediaType, err := parseContentType(r.Header.Get("Content-Type"))
	if err != nil {
		return newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, err.Error())
	}
	limit := s.opts.MaxBatchBytes
	if mediaType == mediaTypeJSON {
		limit = s.opts.MaxEventBytes
	}
	budget, apiErr := s.reserveBody(r, limit)
	if apiErr != nil {
		return apiErr
	}
	defer budget.release()

	var events []delivery.Event
	switch mediaType {
	case mediaTypeJSON:
		ev, apiErr := s.readEvent(w, r)
		if apiErr != nil {
			return apiErr
		}
		events = []delivery.Event{ev}
	default:
		if events, apiErr = s.readBatch(w, r); apiErr != nil {
			return apiErr
		}
	}
	for i := range events {
		events[i].Namespace = namespace
	}

	results, apiErr := s.enqueue(ctx, events)
	if apiErr != nil {
		return apiErr
	}
	logr.FromContextOrDiscard(ctx).V(1).Info("Accepted events", "namespace", namespace, "events", len(events))
	if mediaType == mediaTypeJSON {
		if body, ok := acceptedBody(results[0]); ok {
			writeBody(w, http.StatusAccepted, body)
		} else {
			writeJSON(w, http.StatusAccepted, results[0])
		}
	} else {
		writeJSON(w, http.StatusAccepted, acceptedBatch{Events: results, Accepted: len(results)})
	}
	return nil
}

// authError maps an Authenticator error to the answer.
func (s *Server) authError(ctx context.Context, err error, namespace string) *apiError {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return newError(http.StatusUnauthorized, CodeUnauthenticated, messageOf(err, ErrUnauthenticated))
	case errors.Is(err, ErrForbidden):
		return newError(http.StatusForbidden, CodeForbidden, messageOf(err, ErrForbidden))
	case errors.Is(err, ErrTooManyReviews):
		e := newError(http.StatusTooManyRequests, CodeTooManyRequests, messageOf(err, ErrTooManyReviews))
		e.retryAfter = defaultRetryAfter
		if rl, ok := errors.AsType[*RateLimitError](err); ok {
			e.retryAfter = retryAfterSeconds(rl.RetryAfter)
		}
		return e
	default:
		logr.FromContextOrDiscard(ctx).Error(err, "Authorization check failed", "namespace", namespace)
		return newError(http.StatusServiceUnavailable, CodeAuthUnavailable,
			fmt.Sprintf("the token could not be checked for namespace %q right now; retry later", namespace))
	}
}

// messageOf is err's text without the "<sentinel>: " that wrapping the
// sentinel put in front of it: the answer's code already says that.
func messageOf(err, sentinel error) string {
	return strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
}

// parseContentType returns the media type of a POST, mediaTypeJSON or
// mediaTypeNDJSON, or an error naming what is wrong.
func parseContentType(header string) (string, error) {
	switch header {
	case "":
		return "", errors.New("the Content-Type header is missing: send application/json for one event or application/x-ndjson for a batch")
	case mediaTypeJSON, mediaTypeNDJSON:
		return header, nil // what producers send; no parameters to check
	}
	mediaType, params, err := mime.ParseMediaType(header)
	if err != nil {
		return "", fmt.Errorf("the Content-Type %q is malformed: send application/json for one event or application/x-ndjson for a batch", textutil.Truncate(header, 128))
	}
	switch mediaType {
	case mediaTypeJSON:
	case mediaTypeNDJSON, mediaTypeNDJSONAlias:
		mediaType = mediaTypeNDJSON
	default:
		return "", fmt.Errorf("the Content-Type %q is not supported: send application/json for one event or application/x-ndjson for a batch", textutil.Truncate(mediaType, 128))
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return "", fmt.Errorf("charset %q is not supported: events are UTF-8", textutil.Truncate(cs, 32))
	}
	return mediaType, nil
}

// readEvent reads and decodes a JSON body of at most MaxEventBytes.
func (s *Server) readEvent(w http.ResponseWriter, r *http.Request) (delivery.Event, *apiError) {
	limit := s.opts.MaxEventBytes
	tooLarge := func() *apiError {
		return newError(http.StatusRequestEntityTooLarge, CodeEventTooLarge,
			fmt.Sprintf("the event is larger than the limit of %d bytes", limit))
	}
	if r.ContentLength > limit {
		return delivery.Event{}, tooLarge()
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return delivery.Event{}, tooLarge()
		}
		if errors.Is(err, errOverloaded) {
			return delivery.Event{}, s.overloaded()
		}
		return delivery.Event{}, newError(http.StatusBadRequest, CodeMalformedJSON, fmt.Sprintf("reading the body: %v", err))
	}
	return s.decoder.decode(body)
}

// readAll reads r to its end into a buffer sized for the request's
// Content-Length when it is known (io.ReadAll grows one from 512 bytes).
func readAll(r io.Reader, contentLength int64) ([]byte, error) {
	if contentLength <= 0 {
		return io.ReadAll(r)
	}
	// One byte more, so the read that finds the end needs no new buffer.
	b := make([]byte, 0, contentLength+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // the body is longer than announced: grow
		}
	}
}

// readBatch reads and decodes an NDJSON batch: every line is decoded before
// anything is decided, and one bad line makes the whole batch a 400 naming
// every bad line.
func (s *Server) readBatch(w http.ResponseWriter, r *http.Request) ([]delivery.Event, *apiError) {
	lineLimit := s.opts.MaxEventBytes
	limit := s.opts.MaxBatchBytes
	tooLarge := newError(http.StatusRequestEntityTooLarge, CodeBatchTooLarge,
		fmt.Sprintf("the batch is larger than the limit of %d bytes for a batch body: split it into smaller batches", limit))
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	lines := newLineReader(http.MaxBytesReader(w, r.Body, limit), lineLimit)
	var (
		events  []delivery.Event
		bad     []lineError
		lineNo  int
		nEvents int
	)
	for {
		line, oversize, err := lines.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return nil, tooLarge
			}
			if errors.Is(err, errOverloaded) {
				return nil, s.overloaded()
			}
			return nil, newError(http.StatusBadRequest, CodeMalformedJSON, fmt.Sprintf("reading the body: %v", err))
		}
		lineNo++
		if !oversize && len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if nEvents++; nEvents > MaxBatchEvents {
			return nil, newError(http.StatusRequestEntityTooLarge, CodeBatchTooLarge,
				fmt.Sprintf("the batch holds more than %d events: split it", MaxBatchEvents))
		}
		if oversize {
			bad = append(bad, lineError{Line: lineNo, Code: CodeEventTooLarge,
				Message: fmt.Sprintf("the event is larger than the limit of %d bytes", lineLimit)})
			continue
		}
		ev, apiErr := s.decoder.decode(line)
		if apiErr != nil {
			bad = append(bad, lineError{Line: lineNo, Code: apiErr.code, Message: apiErr.message})
			continue
		}
		events = append(events, ev)
	}
	if len(bad) > 0 {
		return nil, batchError(bad)
	}
	if len(events) == 0 {
		return nil, newError(http.StatusBadRequest, CodeInvalidBatch, "the batch holds no events: send one JSON event a line")
	}
	return events, nil
}

// batchError is the 400 answer to a batch with bad lines.
func batchError(bad []lineError) *apiError {
	e := newError(http.StatusBadRequest, CodeInvalidBatch, "")
	var msg strings.Builder
	for i, l := range bad {
		e.lines = append(e.lines, l.Line)
		if i < maxLineErrorsInMessage {
			if i > 0 {
				msg.WriteString("; ")
			}
			fmt.Fprintf(&msg, "line %d: %s", l.Line, l.Message)
		}
	}
	if more := len(bad) - maxLineErrorsInMessage; more > 0 {
		fmt.Fprintf(&msg, "; and %d more bad lines", more)
	}
	msg.WriteString("; nothing of the batch was accepted")
	e.message = msg.String()
	e.details = bad[:min(len(bad), maxLineErrorsInDetails)]
	return e
}

// enqueue stores the events. The Enqueue call is not cancelled when the
// client goes away, so that a batch is not stored in part only because the
// client hung up; it is bounded by enqueueTimeout.
func (s *Server) enqueue(ctx context.Context, events []delivery.Event) ([]delivery.EnqueueResult, *apiError) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), enqueueTimeout)
	defer cancel()
	results, err := s.opts.Enqueuer.Enqueue(ctx, events)
	if err != nil || len(results) != len(events) {
		return nil, s.enqueueError(ctx, events, results, err)
	}
	return results, nil
}

// enqueueError logs and answers a failed Enqueue.
func (s *Server) enqueueError(ctx context.Context, events []delivery.Event, results []delivery.EnqueueResult, err error) *apiError {
	log := logr.FromContextOrDiscard(ctx)
	if len(events) > 0 {
		log = log.WithValues("namespace", events[0].Namespace)
	}
	if errors.Is(err, store.ErrFull) {
		return newError(http.StatusServiceUnavailable, CodeStoreFull,
			"the event store is full: none of these events was accepted; retry later (deliveries are draining it)")
	}
	if err != nil {
		log.Error(err, "Enqueueing events failed", "events", len(events))
		return newError(http.StatusServiceUnavailable, CodeStoreUnavailable,
			"the event store did not acknowledge the events, so none is known to be accepted; retry later with the same ids (events posted without an id may then be delivered twice)")
	}
	log.Error(nil, "Enqueuer returned the wrong number of results", "events", len(events), "results", len(results))
	return newError(http.StatusInternalServerError, CodeInternal, "the event store answered inconsistently; retry later with the same ids")
}

// renderEventTypes renders the body of GET /v1/event-types.
func renderEventTypes() ([]byte, error) {
	return json.Marshal(catalog.NewList(catalog.Types()))
}

// handleEventTypes serves GET /v1/event-types: the catalog, no auth.
func (s *Server) handleEventTypes(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(s.eventTypes)
}

// handleHealthz serves GET /healthz: 200 while serving.
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReadyz serves GET /readyz: 200 when Options.Ready returns nil, else
// 503 with its reason.
func (s *Server) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	if s.opts.Ready != nil {
		if err := s.opts.Ready(); err != nil {
			writeError(w, newError(http.StatusServiceUnavailable, CodeNotReady, err.Error()))
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// lineReader splits a body into lines, bounding the memory a line may use.
// Every line it returns owns its bytes: the decoder's events point into
// their lines (data is not copied again), so a line must never be
// overwritten by the next one.
type lineReader struct {
	r     *bufio.Reader
	limit int64
	// buf assembles a line that spans several reads; it is reused.
	buf []byte
	// arena holds the lines returned so far; a full arena is replaced, never
	// reused, so returned lines stay intact.
	arena []byte
}

// lineArenaSize is the size of a lineReader's arena: lines are copied into
// chunks this big (or one of their own when larger), one allocation for
// many small lines.
const lineArenaSize = 32 << 10

func newLineReader(r io.Reader, limit int64) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10), limit: limit}
}

// next returns the next line without its "\n" or "\r\n". A line over the
// limit is read to its end and discarded; oversize is then true. It returns
// io.EOF after the last line; a last line without "\n" is a line.
func (l *lineReader) next() (line []byte, oversize bool, err error) {
	l.buf = l.buf[:0]
	read := false
	for {
		chunk, err := l.r.ReadSlice('\n')
		if len(chunk) > 0 {
			read = true
		}
		if !oversize {
			if int64(len(l.buf)+len(chunk)) > l.limit+2 { // room for "\r\n"
				oversize = true
				l.buf = l.buf[:0]
			} else {
				l.buf = append(l.buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !read {
				return nil, false, io.EOF
			}
		case err != nil:
			return nil, false, err
		}
		break
	}
	line = bytes.TrimSuffix(l.buf, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if !oversize && int64(len(line)) > l.limit {
		oversize, line = true, nil
	}
	if oversize {
		return nil, true, nil
	}
	return l.own(line), false, nil
}

// own copies line into the arena and returns the copy, which no later line
// overwrites.
func (l *lineReader) own(line []byte) []byte {
	if len(line) > cap(l.arena)-len(l.arena) {
		l.arena = make([]byte, 0, max(lineArenaSize, len(line)))
	}
	start := len(l.arena)
	l.arena = append(l.arena, line...)
	return l.arena[start:len(l.arena):len(l.arena)]
}
