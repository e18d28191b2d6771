package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"time"
)

// Event is one accepted application event, ready to be stored and fanned out.
type Event struct {
	// ID is the event's webhook-id: the producer's idempotency key, or one
	// generated at acceptance.
	ID string
	// IdempotencyKey is true when ID came from the producer; such events are
	// accepted once per namespace and ID within 24 hours.
	IdempotencyKey bool
	// Namespace is where the event was posted; only this namespace's
	// WebhookConfigs receive it.
	Namespace string
	// Type is the event type, such as "message.sent".
	Type string
	// Timestamp is the envelope's timestamp.
	Timestamp time.Time
	// Data is the event's data object, already validated.
	Data json.RawMessage
	// DataCanonical is true when Data is exactly what encoding/json writes
	// for it (compact, with <, >, &, U+2028 and U+2029 escaped), as
	// CanonicalData returns: Envelope then copies it instead of encoding it
	// again.
	DataCanonical bool
}

// envelopeTimeFormat is the envelope's timestamp: RFC 3339, milliseconds, UTC.
const envelopeTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Envelope returns the exact body delivered to receivers: the Standard
// Webhooks envelope {"type", "timestamp", "data"}.
func (e *Event) Envelope() ([]byte, error) {
	if !e.DataCanonical || !plainName(e.Type) {
		return json.Marshal(struct {
			Type      string          `json:"type"`
			Timestamp string          `json:"timestamp"`
			Data      json.RawMessage `json:"data"`
		}{e.Type, e.Timestamp.UTC().Format(envelopeTimeFormat), e.Data})
	}
	// The same bytes as above, without encoding/json's reflection and its
	// second pass over data.
	buf := make([]byte, 0, len(`{"type":"","timestamp":"","data":}`)+len(e.Type)+len(envelopeTimeFormat)+len(e.Data))
	buf = append(buf, `{"type":"`...)
	buf = append(buf, e.Type...)
	buf = append(buf, `","timestamp":"`...)
	buf = e.Timestamp.UTC().AppendFormat(buf, envelopeTimeFormat)
	buf = append(buf, `","data":`...)
	buf = append(buf, e.Data...)
	return append(buf, '}'), nil
}

// plainName reports whether s needs no escaping in a JSON string (event
// type names are lower-case words and dots).
func plainName(s string) bool {
	for i := range len(s) {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// CanonicalData returns data, which must be valid JSON, the way
// encoding/json writes a json.RawMessage: compacted, with <, >, &, U+2028
// and U+2029 escaped. An Event whose Data it returned may set DataCanonical.
// Data that is compact already (as producers' JSON usually is) is not run
// through encoding/json's scanner again.
func CanonicalData(data []byte) ([]byte, error) {
	compact, plain := inspect(data)
	if !compact {
		var buf bytes.Buffer
		buf.Grow(len(data))
		if err := json.Compact(&buf, data); err != nil {
			return nil, err
		}
		data = buf.Bytes()
	}
	if plain {
		return data, nil
	}
	var escaped bytes.Buffer
	escaped.Grow(len(data) + 16)
	json.HTMLEscape(&escaped, data)
	return escaped.Bytes(), nil
}

// inspect reads valid JSON once and reports whether it has no whitespace
// outside strings (compact) and no byte encoding/json would HTML-escape:
// <, >, &, U+2028 or U+2029 (plain).
func inspect(data []byte) (compact, plain bool) {
	compact, plain = true, true
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte, a quote included
			case '"':
				inString = false
			case '<', '>', '&':
				plain = false
			case 0xE2: // U+2028 and U+2029 are E2 80 A8 and E2 80 A9
				if i+2 < len(data) && data[i+1] == 0x80 && data[i+2]&^1 == 0xA8 {
					plain = false
				}
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case ' ', '\t', '\n', '\r':
			compact = false
		}
	}
	return compact, plain
}

// EnqueueResult says what became of one enqueued event.
type EnqueueResult struct {
	// ID is the event's webhook-id.
	ID string `json:"id"`
	// Subscribers is the number of enabled endpoints of the namespace subscribed
	// to the event's type when it was accepted and whose filter matched it.
	Subscribers int `json:"subscribers"`
	// Duplicate is true when an event with the same idempotency key was
	// already accepted within 24 hours; it is not delivered again.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Enqueuer durably accepts events. It is what the ingestion API calls.
type Enqueuer interface {
	// Enqueue stores every event durably and returns one result per event, in
	// order, only once the store acknowledged all of them. On error (wrapping
	// ErrUnavailable when the store is down) the caller must answer 503: events
	// may have been stored in part, and a retry with the same IDs is safe.
	Enqueue(ctx context.Context, events []Event) ([]EnqueueResult, error)
}
