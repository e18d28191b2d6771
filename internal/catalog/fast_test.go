package catalog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// fullValidate is Validate without the fast check.
func fullValidate(t Type, data []byte) error {
	t.fast = nil
	return t.Validate(data)
}

func BenchmarkValidate(b *testing.B) {
	typ, _ := Lookup(MessageSent)
	data := []byte(`{"messageId":"msg_01HZX3","sessionId":"sess_sales_1","to":"+6281234567890","campaignId":"cmp_2026_11_promo","sentAt":"2026-11-28T10:15:00Z"}`)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if err := typ.Validate(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			if err := fullValidate(typ, data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestEveryCatalogSchemaHasAFastCheckThatTakesItsExample(t *testing.T) {
	for _, typ := range Types() {
		if typ.fast == nil {
			t.Errorf("%s: the schema uses a keyword the fast check does not know, so every event takes the full validator", typ.Name)
			continue
		}
		if !typ.fast.valid(typ.Example) {
			t.Errorf("%s: the fast check does not take the example", typ.Name)
		}
	}
}

// The fast check takes the common valid shapes and refuses every kind of
// violation (and a few valid shapes it leaves to the full validator), whose
// answer Validate then gives unchanged.
func TestFastCheckTakesValidDataAndLeavesTheRestToTheFullValidator(t *testing.T) {
	sent, _ := Lookup(MessageSent)
	failed, _ := Lookup(MessageFailed)
	completed, _ := Lookup(CampaignCompleted)
	cases := []struct {
		name    string
		typ     Type
		data    string
		fast    bool // the fast check takes it
		invalid bool // the full validator refuses it
	}{
		{"minimal", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890"}`, true, false},
		{"whitespace and extra members", sent, " {\n \"messageId\" : \"m\", \"extra\": [1, -2.5e3, {\"a\": null}, true, false, \"x\\n\"], \"sessionId\":\"s\",\"to\":\"+6281234567890\", \"sentAt\": \"2026-02-28T23:59:59.123+07:00\" } ", true, false},
		{"missing required", sent, `{"messageId":"m","sessionId":"s"}`, false, true},
		{"empty id", sent, `{"messageId":"","sessionId":"s","to":"+6281234567890"}`, false, true},
		{"id too long", sent, `{"messageId":"` + string(bytes.Repeat([]byte("é"), 257)) + `","sessionId":"s","to":"+6281234567890"}`, false, true},
		{"256 runes of two bytes", sent, `{"messageId":"` + string(bytes.Repeat([]byte("é"), 256)) + `","sessionId":"s","to":"+6281234567890"}`, true, false},
		{"pattern", sent, `{"messageId":"m","sessionId":"s","to":"6281234567890"}`, false, true},
		{"wrong type", sent, `{"messageId":7,"sessionId":"s","to":"+6281234567890"}`, false, true},
		{"null required", sent, `{"messageId":null,"sessionId":"s","to":"+6281234567890"}`, false, true},
		{"bad date", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890","sentAt":"2026-02-29T10:00:00Z"}`, false, true},
		{"bad offset", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890","sentAt":"2026-02-28T10:00:00+24:00"}`, false, true},
		{"leap second, left to the full validator", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890","sentAt":"2016-12-31T23:59:60Z"}`, false, false},
		{"escaped id, left to the full validator", sent, `{"messageId":"\u006d","sessionId":"s","to":"+6281234567890"}`, false, false},
		{"escaped key, left to the full validator", sent, `{"message\u0049d":"m","sessionId":"s","to":"+6281234567890"}`, false, false},
		{"duplicate key, left to the full validator", sent, `{"messageId":"","messageId":"m","sessionId":"s","to":"+6281234567890"}`, false, false},
		{"number out of a float64's range", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890","n":1e999}`, false, true},
		{"long number in range", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890","n":` + string(bytes.Repeat([]byte("9"), 250)) + `}`, true, false},
		{"nested 10,000 deep", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890","x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`, true, false},
		{"nested deeper than 10,000, left to the full validator", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890","x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, false, true},
		{"not an object", sent, `["m"]`, false, true},
		{"trailing garbage", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890"} x`, false, true},
		{"truncated", sent, `{"messageId":"m","sessionId":"s","to":"+6281234567890"`, false, true},
		{"control character in a string", sent, "{\"messageId\":\"m\",\"sessionId\":\"s\",\"to\":\"+6281234567890\",\"x\":\"a\tb\"}", false, true},
		{"nested object", failed, `{"messageId":"m","sessionId":"s","to":"+6281234567890","error":{"code":"E1","message":"no"}}`, true, false},
		{"nested object missing a member", failed, `{"messageId":"m","sessionId":"s","to":"+6281234567890","error":{"code":"E1"}}`, false, true},
		{"nested member empty", failed, `{"messageId":"m","sessionId":"s","to":"+6281234567890","error":{"code":"","message":"no"}}`, false, true},
		{"nested member wrong type", failed, `{"messageId":"m","sessionId":"s","to":"+6281234567890","error":"E1"}`, false, true},
		{"integer below its minimum", completed, withSent(t, completed.Example, "-1"), false, true},
		{"integer written as 1.0, left to the full validator", completed, withSent(t, completed.Example, "1.0"), false, false},
		{"integer with a fraction", completed, withSent(t, completed.Example, "1.5"), false, true},
		{"integer of 19 digits, left to the full validator", completed, withSent(t, completed.Example, "1000000000000000000"), false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.typ.fast.valid([]byte(c.data)); got != c.fast {
				t.Errorf("fast check = %v, want %v", got, c.fast)
			}
			full := fullValidate(c.typ, []byte(c.data))
			if (full != nil) != c.invalid {
				t.Fatalf("full validator: %v, want invalid = %v", full, c.invalid)
			}
			if got := c.typ.Validate([]byte(c.data)); (got == nil) != (full == nil) || (got != nil && got.Error() != full.Error()) {
				t.Errorf("Validate = %v, want the full validator's %v", got, full)
			}
		})
	}
}

// withSent returns the example with its member "sent" set to the raw value.
func withSent(t *testing.T, example []byte, raw string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(example, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["sent"]; !ok {
		t.Fatal(`the example has no member "sent"`)
	}
	m["sent"] = json.RawMessage(raw)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The fast check never takes data the full validator refuses.
func FuzzFastCheckNeverTakesInvalidData(f *testing.F) {
	types := Types()
	for i, typ := range types {
		f.Add(uint8(i), []byte(typ.Example))
	}
	f.Add(uint8(0), []byte(`{"messageId":"m","sessionId":"s","to":"+6281234567890","sentAt":"2026-02-28T23:59:59.5Z"}`))
	f.Add(uint8(2), []byte(`{"messageId":"m","sessionId":"s","to":"+6281234567890","error":{"code":"E1","message":"no"},"x":[1e5,{}]}`))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		typ := types[int(which)%len(types)]
		if typ.fast == nil || !typ.fast.valid(data) {
			return
		}
		if err := fullValidate(typ, data); err != nil {
			t.Fatalf("the fast check took %q, which the full validator refuses: %v", data, err)
		}
		if _, err := jsonschema.UnmarshalJSON(bytes.NewReader(data)); err != nil {
			t.Fatalf("the fast check took %q, which is not JSON: %v", data, err)
		}
	})
}
