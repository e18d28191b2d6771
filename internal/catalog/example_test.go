package catalog_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wablast/webhook-operator/internal/catalog"
)

func ExampleType_Validate() {
	typ, ok := catalog.Lookup("message.sent")
	if !ok {
		panic("message.sent is not in the catalog")
	}
	fmt.Println(typ.Validate(json.RawMessage(`{"messageId": "m1", "sessionId": "s1", "to": "+6281234567890"}`)))

	err := typ.Validate(json.RawMessage(`{"messageId": "m1", "sessionId": "s1", "to": "0812345"}`))
	var verr *catalog.ValidationError
	if errors.As(err, &verr) {
		fmt.Println(verr.Path)
	}
	fmt.Println(err)
	// Output:
	// <nil>
	// /to
	// data does not match the message.sent schema at /to: "0812345" is not an E.164 phone number ("+", country code and number, digits only, such as "+6281234567890")
}

func ExampleNewList() {
	typ, _ := catalog.Lookup(catalog.WebhookTest)
	list := catalog.NewList([]catalog.Type{typ})
	body, err := json.Marshal(list)
	if err != nil {
		panic(err)
	}
	var doc struct {
		EventTypes []map[string]json.RawMessage `json:"eventTypes"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		panic(err)
	}
	for _, field := range []string{"type", "description", "schema", "example", "reserved"} {
		fmt.Printf("%s: %t\n", field, doc.EventTypes[0][field] != nil)
	}
	fmt.Println(string(doc.EventTypes[0]["type"]), string(doc.EventTypes[0]["reserved"]))
	// Output:
	// type: true
	// description: true
	// schema: true
	// example: true
	// reserved: true
	// "webhook.test" true
}
