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
