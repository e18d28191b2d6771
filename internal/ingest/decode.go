package ingest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/textutil"
)

// MaxIDLength is the maximum length of an event id.
const MaxIDLength = 256

// eventFields are the only top-level fields of a posted event.
var eventFields = []string{"id", "type", "timestamp", "data"}

// decoder turns request bodies into events.
type decoder struct {
	now   func() time.Time
	newID func() string
}

// decode parses one posted event: a JSON object with "type" and "data" and
// optionally "id" and "timestamp", nothing else. It returns the event,
// without Namespace, or an apiError with status 400 (malformed) or 422
// (unknown or reserved type, data not matching its schema). The structural
// checks come first, so a body that is both malformed and of an unknown type
// is a 400.
func (d decoder) decode(body []byte) (delivery.Event, *apiError) {
	if len(bytes.TrimSpace(body)) == 0 {
		return delivery.Event{}, newError(http.StatusBadRequest, CodeMalformedJSON, "the body is empty: send one event as a JSON object")
	}
	if !utf8.Valid(body) {
		return delivery.Event{}, newError(http.StatusBadRequest, CodeMalformedJSON, "the body is not valid UTF-8")
	}
	fields, err := objectFields(body)
	if err != nil {
		return delivery.Event{}, malformed(body, err)
	}
	if fields == nil {
		return delivery.Event{}, newError(http.StatusBadRequest, CodeMalformedJSON, "the event must be a JSON object, got null")
	}
	var unknown []string
	for name := range fields {
		if !slices.Contains(eventFields, name) {
			unknown = append(unknown, strconv.Quote(textutil.Truncate(name, 64)))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return delivery.Event{}, invalid("unknown top-level field %s: an event has only id, type, timestamp and data (put custom fields inside data)", strings.Join(unknown, ", "))
	}

	// type: required; looked up after the other structural checks.
	typeName, present, err := optionalString(fields["type"])
	switch {
	case err != nil:
		return delivery.Event{}, invalid("type must be a string, got %s", err)
	case !present || typeName == "":
		return delivery.Event{}, invalid("type is required, such as \"message.sent\"")
	}

	ev := delivery.Event{}
	id, present, err := optionalString(fields["id"])
	switch {
	case err != nil:
		return delivery.Event{}, invalid("id must be a string, got %s", err)
	case present:
		if err := validateID(id); err != nil {
			return delivery.Event{}, invalid("%v", err)
		}
		ev.ID, ev.IdempotencyKey = id, true
	default:
		ev.ID = d.newID()
	}

	ts, present, err := optionalString(fields["timestamp"])
	switch {
	case err != nil:
		return delivery.Event{}, invalid("timestamp must be an RFC 3339 string such as \"2026-11-28T10:15:02.123Z\", got %s", err)
	case present:
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return delivery.Event{}, invalid("timestamp %s is not an RFC 3339 time such as \"2026-11-28T10:15:02.123Z\"", strconv.Quote(textutil.Truncate(ts, 64)))
		}
		ev.Timestamp = t
	default:
		ev.Timestamp = d.now()
	}

	data, ok := fields["data"]
	if !ok {
		return delivery.Event{}, invalid("data is required: the event's payload as a JSON object")
	}
	typ, ok := catalog.Lookup(typeName)
	if !ok {
		return delivery.Event{}, newError(http.StatusUnprocessableEntity, CodeUnknownEventType,
			fmt.Sprintf("unknown event type %s: the types are %s", strconv.Quote(textutil.Truncate(typeName, 64)), postableTypes()))
	}
	if typ.Reserved {
		return delivery.Event{}, newError(http.StatusUnprocessableEntity, CodeReservedEventType,
			fmt.Sprintf("event type %q is reserved for test deliveries sent by the operator and cannot be posted", typ.Name))
	}
	// data not being an object, or holding a duplicate name, is data not
	// matching its schema: 422, after the type is known.
	if k := jsonKind(data); k != "object" {
		return delivery.Event{}, newError(http.StatusUnprocessableEntity, CodeSchemaViolation,
			fmt.Sprintf("data must be a JSON object, got %s", k))
	}
	if path, key, dup := duplicateKey(data); dup {
		if path == "" {
			path = "/"
		}
		return delivery.Event{}, newError(http.StatusUnprocessableEntity, CodeSchemaViolation,
			fmt.Sprintf("data has the member %s twice in the object at %s: parsers disagree on which value counts, so duplicate names are refused",
				strconv.Quote(textutil.Truncate(key, 64)), path))
	}
	if err := typ.Validate(data); err != nil {
		e := newError(http.StatusUnprocessableEntity, CodeSchemaViolation, err.Error())
		if verr, ok := errors.AsType[*catalog.ValidationError](err); ok {
			e.violations = verr.List
		}
		return delivery.Event{}, e
	}
	canonical, err := delivery.CanonicalData(data)
	if err != nil {
		// Cannot happen: data was parsed above.
		return delivery.Event{}, malformed(data, err)
	}
	ev.Type = typ.Name
	ev.Data = canonical
	ev.DataCanonical = true
	return ev, nil
}

func invalid(format string, args ...any) *apiError {
	return newError(http.StatusBadRequest, CodeInvalidEvent, fmt.Sprintf(format, args...))
}

// malformed describes a json.Unmarshal error of an event without quoting
// the body.
func malformed(body []byte, err error) *apiError {
	var syntax *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return newError(http.StatusBadRequest, CodeMalformedJSON,
			fmt.Sprintf("malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: ")))
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return newError(http.StatusBadRequest, CodeMalformedJSON,
			fmt.Sprintf("the event must be a JSON object, got %s", jsonKind(bytes.TrimSpace(body))))
	default:
		return newError(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON: "+strings.TrimPrefix(err.Error(), "json: "))
	}
}

// optionalString decodes a field that must be a string when present. null
// counts as absent. On a wrong type, err describes the JSON kind found.
func optionalString(raw json.RawMessage) (string, bool, error) {
	if raw == nil || jsonKind(raw) == "null" {
		return "", false, nil
	}
	if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		// A valid string without escapes is its bytes between the quotes.
		return string(raw[1 : len(raw)-1]), true, nil
	}
	// Only this path needs a string on the heap for json.Unmarshal to fill.
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, errors.New(jsonKind(raw))
	}
	return s, true, nil
}

// jsonKind names the kind of a valid JSON value by its first byte.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// validateID checks a producer's event id: 1..MaxIDLength characters of
// [A-Za-z0-9_.:-]. The error names the first offending character's
// position, never the whole id.
func validateID(id string) error {
	if id == "" {
		return errors.New("id must not be empty: omit it to have one generated")
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("id is %d characters long, the limit is %d", len(id), MaxIDLength)
	}
	for i := range len(id) {
		if !idByte(id[i]) {
			return fmt.Errorf("id has a forbidden character at position %d: ids use only A-Z, a-z, 0-9, '_', '.', ':' and '-'", i+1)
		}
	}
	return nil
}

func idByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '.' || c == ':' || c == '-'
}

// postableTypes lists the types a producer may post.
func postableTypes() string {
	var names []string
	for _, t := range catalog.Types() {
		if !t.Reserved {
			names = append(names, t.Name)
		}
	}
	return strings.Join(names, ", ")
}

const (
	base62       = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	idPrefix     = "msg_"
	idRandomSize = 27
)

// NewEventID returns "msg_" followed by 27 random base62 characters from
// crypto/rand (about 160 bits), the shape of Standard Webhooks message ids.
// It is the default Options.NewID. The random bytes are read from the
// system a few kilobytes at a time, not once per id.
func NewEventID() string {
	out := make([]byte, len(idPrefix), len(idPrefix)+idRandomSize)
	copy(out, idPrefix)
	idRandom.Lock()
	defer idRandom.Unlock()
	for len(out) < cap(out) {
		b, err := idRandom.r.ReadByte()
		if err != nil {
			// crypto/rand.Reader never fails (Go 1.24+); it crashes the
			// program if the system's source does.
			panic(err)
		}
		// 248 = 4*62: rejecting larger bytes keeps the choice uniform.
		if b < 248 {
			out = append(out, base62[b%62])
		}
	}
	return string(out)
}

// idRandom buffers crypto/rand for NewEventID.
var idRandom = struct {
	sync.Mutex
	r *bufio.Reader
}{r: bufio.NewReaderSize(rand.Reader, 4096)}
