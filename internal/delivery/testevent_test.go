package delivery

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"

	"github.com/wablast/webhook-operator/internal/catalog"
)

// The webhook.test event the dispatcher sends is what docs/events.md shows
// (it is generated from the catalog): it matches the schema, carries every
// field of the schema and of the example and no other, each one required,
// and the example's text.
func TestTestEventMatchesTheCatalog(t *testing.T) {
	typ, ok := catalog.Lookup("webhook.test")
	if !ok {
		t.Fatal("webhook.test is not in the catalog")
	}
	data, err := TestEventData("shop", "crm", "2026-11-28T10:15:00Z")
	if err != nil {
		t.Fatal(err)
	}
	if err := typ.Validate(data); err != nil {
		t.Fatalf("the test event does not match its schema: %v", err)
	}
	var sent, example map[string]any
	if err := json.Unmarshal(data, &sent); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(typ.Example, &example); err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]json.RawMessage `json:"properties"`
		Required   []string                   `json:"required"`
	}
	if err := json.Unmarshal(typ.Schema, &schema); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(maps.Keys(sent))
	for what, want := range map[string][]string{
		"the example's fields":          slices.Sorted(maps.Keys(example)),
		"the schema's properties":       slices.Sorted(maps.Keys(schema.Properties)),
		"the schema's required members": slices.Sorted(slices.Values(schema.Required)),
	} {
		if !slices.Equal(keys, want) {
			t.Errorf("the test event has fields %v, %s are %v", keys, what, want)
		}
	}
	if sent["message"] != example["message"] || sent["message"] != TestMessage {
		t.Errorf("message %q, the example's %q", sent["message"], example["message"])
	}
	if sent["webhookConfig"] != "crm" || sent["namespace"] != "shop" || sent["requestedAt"] != "2026-11-28T10:15:00Z" {
		t.Errorf("data %s", data)
	}
}
