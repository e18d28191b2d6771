package dispatch

import (
	"context"
	"encoding/json"
	"errors"
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
}

// Envelope returns the exact body delivered to receivers: the Standard
// Webhooks envelope {"type", "timestamp", "data"}.
func (e *Event) Envelope() ([]byte, error) {
	return json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{e.Type, e.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z07:00"), e.Data})
}

// EnqueueResult says what became of one enqueued event.
type EnqueueResult struct {
	// ID is the event's webhook-id.
	ID string `json:"id"`
	// Subscribers is the number of enabled endpoints of the namespace subscribed
	// to the event's type when it was accepted.
	Subscribers int `json:"subscribers"`
	// Duplicate is true when an event with the same idempotency key was
	// already accepted within 24 hours; it is not delivered again.
	Duplicate bool `json:"duplicate,omitempty"`
}

// ErrUnavailable is returned by Enqueue when the event store cannot
// acknowledge the events; nothing returned with it was acknowledged.
var ErrUnavailable = errors.New("event store unavailable")

// Enqueuer durably accepts events. It is what the ingestion API calls.
type Enqueuer interface {
	// Enqueue stores every event durably and returns one result per event, in
	// order, only once the store acknowledged all of them. On error (wrapping
	// ErrUnavailable when the store is down) the caller must answer 503: events
	// may have been stored in part, and a retry with the same IDs is safe.
	Enqueue(ctx context.Context, events []Event) ([]EnqueueResult, error)
}
