package ingest

import (
	"encoding/json"
	"net/http"

	"github.com/wablast/webhook-operator/internal/catalog"
)

// The error codes of the ingestion API, the "code" of every error body.
const (
	// CodeMalformedJSON (400): the body, or a batch line, is not JSON or not
	// a JSON object.
	CodeMalformedJSON = "malformed_json"
	// CodeInvalidEvent (400): the event object is malformed: a missing or
	// empty type, missing data, a bad id or timestamp, an unknown top-level
	// field.
	CodeInvalidEvent = "invalid_event"
	// CodeInvalidBatch (400): one or more lines of a batch are bad; the error
	// names them and nothing of the batch was accepted.
	CodeInvalidBatch = "invalid_batch"
	// CodeInvalidNamespace (400): the path's namespace is not a valid
	// namespace name.
	CodeInvalidNamespace = "invalid_namespace"
	// CodeUnauthenticated (401): no bearer token, or a token that is neither
	// a valid Kubernetes token nor a static ingest token of the namespace
	// (a static token of another namespace gets the same answer).
	CodeUnauthenticated = "unauthenticated"
	// CodeForbidden (403): the Kubernetes token is valid but its user may
	// not post events in this namespace.
	CodeForbidden = "forbidden"
	// CodeNotFound (404): no such path.
	CodeNotFound = "not_found"
	// CodeMethodNotAllowed (405): the path exists but not for this method.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeEventTooLarge (413): an event (a JSON body, or a batch line) is
	// over the per-event size limit.
	CodeEventTooLarge = "event_too_large"
	// CodeBatchTooLarge (413): a batch body is over the batch size limit
	// (Options.MaxBatchBytes) or holds more than MaxBatchEvents events.
	CodeBatchTooLarge = "batch_too_large"
	// CodeUnsupportedMediaType (415): the Content-Type is neither
	// application/json nor application/x-ndjson (or names a charset other
	// than utf-8).
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeUnknownEventType (422): the type is not in the catalog.
	CodeUnknownEventType = "unknown_event_type"
	// CodeReservedEventType (422): the type is webhook.test, which only the
	// operator sends.
	CodeReservedEventType = "reserved_event_type"
	// CodeSchemaViolation (422): data does not match its type's schema: it
	// is not an object, names a member twice in one object, or violates the
	// schema; the message names every violation (up to a cap) with its JSON
	// Pointer, and "violations" lists them as {pointer, reason}.
	CodeSchemaViolation = "schema_violation"
	// CodeTooManyRequests (429): the token is not known yet and checking it
	// would exceed the limits on token reviews (per client address, overall,
	// or at once). Retry after Retry-After seconds.
	CodeTooManyRequests = "too_many_requests"
	// CodeInternal (500): a bug; nothing was accepted.
	CodeInternal = "internal_error"
	// CodeStoreUnavailable (503): the event store did not acknowledge the
	// events; nothing may be assumed stored. Retry with the same ids.
	CodeStoreUnavailable = "store_unavailable"
	// CodeStoreFull (503): the event store holds as much as its bound allows;
	// retry once deliveries have drained it.
	CodeStoreFull = "store_full"
	// CodeAuthUnavailable (503): the token could not be checked because the
	// Kubernetes API did not answer. Retry.
	CodeAuthUnavailable = "auth_unavailable"
	// CodeOverloaded (503): the request bodies being read, decoded or stored
	// at once already take the manager's limit (--max-decoding-bytes);
	// nothing was read. Retry after Retry-After seconds.
	CodeOverloaded = "overloaded"
	// CodeNotReady (503): the readiness check failed.
	CodeNotReady = "not_ready"
)

// apiError is an error answered to the client.
type apiError struct {
	status  int
	code    string
	message string
	// retryAfter, when > 0, is the Retry-After header in seconds; 503
	// answers without one get defaultRetryAfter.
	retryAfter int
	// lines and details are set for CodeInvalidBatch only.
	lines   []int
	details []lineError
	// violations are set for a CodeSchemaViolation of the schema.
	violations []catalog.Violation
}

// lineError is one bad line of a batch.
type lineError struct {
	Line    int    `json:"line"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.message }

// errorBody is the JSON error body: {"error": {...}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string      `json:"code"`
	Message string      `json:"message"`
	Lines   []int       `json:"lines,omitempty"`
	Details []lineError `json:"details,omitempty"`
	// Violations lists a schema_violation's violations (up to
	// catalog.MaxListedViolations), each with its JSON Pointer.
	Violations []catalog.Violation `json:"violations,omitempty"`
}

// defaultRetryAfter is the Retry-After of a 503, in seconds.
const defaultRetryAfter = 5

func newError(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

// writeJSON writes v as the JSON response body with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":{"code":"internal_error","message":"encoding the response failed"}}`)
	}
	writeBody(w, status, body)
}

// Header values of every JSON answer, shared: net/http only reads them.
var (
	headerJSON    = []string{"application/json"}
	headerNoSniff = []string{"nosniff"}
	headerNoStore = []string{"no-store"}
)

// writeBody writes a JSON body that does not end in a newline yet.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = headerJSON
	h["X-Content-Type-Options"] = headerNoSniff
	h["Cache-Control"] = headerNoStore
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// writeError writes e as a JSON error body.
func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, errorBody{Error: errorDetail{
		Code: e.code, Message: e.message, Lines: e.lines, Details: e.details, Violations: e.violations,
	}})
}
