package catalog

import "encoding/json"

// List is the JSON document of a list of event types: the body of the
// ingestion API's GET /v1/event-types and the output of
// "kubectl webhook event-types -o json".
type List struct {
	EventTypes []ListEntry `json:"eventTypes"`
}

// ListEntry is one event type of a List.
type ListEntry struct {
	// Type is the type's name, such as "message.sent".
	Type string `json:"type"`
	// Description says when an event of this type is emitted.
	Description string `json:"description"`
	// Schema is the JSON Schema of the type's data object.
	Schema json.RawMessage `json:"schema"`
	// Example is an example data object.
	Example json.RawMessage `json:"example"`
	// Reserved is true for webhook.test, which cannot be posted; omitted
	// otherwise.
	Reserved bool `json:"reserved,omitempty"`
}

// NewList returns the List of types, in the given order. The entries share
// the types' Schema and Example bytes.
func NewList(types []Type) List {
	l := List{EventTypes: make([]ListEntry, 0, len(types))}
	for _, t := range types {
		l.EventTypes = append(l.EventTypes, ListEntry{
			Type: t.Name, Description: t.Description, Schema: t.Schema, Example: t.Example, Reserved: t.Reserved,
		})
	}
	return l
}
