package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"
)

func TestEveryExampleValidatesAgainstItsSchema(t *testing.T) {
	for _, typ := range Types() {
		t.Run(typ.Name, func(t *testing.T) {
			if err := typ.Validate(typ.Example); err != nil {
				t.Fatalf("example does not validate: %v", err)
			}
		})
	}
}

func TestCatalogHoldsExactlyTheContractTypes(t *testing.T) {
	want := []string{
		"message.sent", "message.delivered", "message.failed",
		"session.connected", "session.disconnected",
		"campaign.started", "campaign.completed", "webhook.test",
	}
	var got []string
	for _, typ := range Types() {
		got = append(got, typ.Name)
		if typ.Description == "" {
			t.Errorf("%s has no description", typ.Name)
		}
		if !json.Valid(typ.Schema) || !json.Valid(typ.Example) {
			t.Errorf("%s: schema or example is not valid JSON", typ.Name)
		}
		if typ.Reserved != (typ.Name == "webhook.test") {
			t.Errorf("%s: Reserved = %v", typ.Name, typ.Reserved)
		}
		var s struct {
			Schema               string `json:"$schema"`
			Type                 string `json:"type"`
			AdditionalProperties *bool  `json:"additionalProperties"`
		}
		if err := json.Unmarshal(typ.Schema, &s); err != nil {
			t.Fatal(err)
		}
		if s.Schema != "https://json-schema.org/draft/2020-12/schema" || s.Type != "object" ||
			s.AdditionalProperties == nil || !*s.AdditionalProperties {
			t.Errorf("%s: schema must be draft 2020-12, type object, additionalProperties true; got %+v", typ.Name, s)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Types() = %v, want %v", got, want)
	}
	if !slices.Equal(Names(), want) {
		t.Fatalf("Names() = %v, want %v", Names(), want)
	}

	// Every embedded file belongs to a type: no orphan left behind by a rename.
	for _, dir := range []string{"schemas", "examples"} {
		entries, err := fs.ReadDir(files, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if name := strings.TrimSuffix(e.Name(), ".json"); !slices.Contains(want, name) {
				t.Errorf("%s is not a catalog type", path.Join(dir, e.Name()))
			}
		}
	}
}

func TestLookup(t *testing.T) {
	typ, ok := Lookup("message.failed")
	if !ok || typ.Name != "message.failed" || len(typ.Schema) == 0 || len(typ.Example) == 0 {
		t.Fatalf("Lookup(message.failed) = %+v, %v", typ, ok)
	}
	for _, name := range []string{"", "message", "MESSAGE.SENT", "message.sent ", "*"} {
		if _, ok := Lookup(name); ok {
			t.Errorf("Lookup(%q) found a type", name)
		}
	}
}

func TestValidateNamesThePathOfTheViolation(t *testing.T) {
	tests := map[string]struct {
		typ        string
		data       string
		wantPath   string
		wantReason string
	}{
		"a missing required property is reported at its own path": {
			typ: "message.sent", data: `{"messageId":"m1","sessionId":"s1"}`,
			wantPath: "/to", wantReason: "required property is missing",
		},
		"a phone number that is not E.164 is reported at /to": {
			typ: "message.sent", data: `{"messageId":"m1","sessionId":"s1","to":"081234567890"}`,
			wantPath: "/to", wantReason: "is not an E.164 phone number",
		},
		"a number where a string is required names the type": {
			typ: "message.delivered", data: `{"messageId":42,"sessionId":"s1","to":"+6281234567890"}`,
			wantPath: "/messageId", wantReason: "want string",
		},
		"message.failed without error is refused": {
			typ: "message.failed", data: `{"messageId":"m1","sessionId":"s1","to":"+6281234567890"}`,
			wantPath: "/error", wantReason: "required property is missing",
		},
		"a nested missing property is reported with its full path": {
			typ: "message.failed", data: `{"messageId":"m1","sessionId":"s1","to":"+6281234567890","error":{"message":"x"}}`,
			wantPath: "/error/code", wantReason: "required property is missing",
		},
		"an error that is not an object is refused": {
			typ: "message.failed", data: `{"messageId":"m1","sessionId":"s1","to":"+6281234567890","error":"boom"}`,
			wantPath: "/error", wantReason: "want object",
		},
		"a session phone number must be E.164": {
			typ: "session.connected", data: `{"sessionId":"s1","phoneNumber":"+62 811"}`,
			wantPath: "/phoneNumber", wantReason: "is not an E.164 phone number",
		},
		"a negative count is refused": {
			typ: "campaign.started", data: `{"campaignId":"c1","name":"n","total":-1}`,
			wantPath: "/total", wantReason: "minimum",
		},
		"a fractional count is refused": {
			typ: "campaign.completed", data: `{"campaignId":"c1","name":"n","total":3,"sent":2.5,"delivered":1,"failed":0}`,
			wantPath: "/sent", wantReason: "want integer",
		},
		"completed counts are required": {
			typ: "campaign.completed", data: `{"campaignId":"c1","name":"n","total":3,"sent":3,"delivered":3}`,
			wantPath: "/failed", wantReason: "required property is missing",
		},
		"a timestamp in data must be RFC 3339": {
			typ: "session.disconnected", data: `{"sessionId":"s1","phoneNumber":"+6281100001111","disconnectedAt":"yesterday"}`,
			wantPath: "/disconnectedAt", wantReason: "date-time",
		},
		"data that is not an object is reported at the root": {
			typ: "webhook.test", data: `["message"]`,
			wantPath: "", wantReason: "want object",
		},
		"data that is not JSON is refused": {
			typ: "message.sent", data: `{"messageId":`,
			wantPath: "", wantReason: "not valid JSON",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			typ, ok := Lookup(tc.typ)
			if !ok {
				t.Fatalf("no type %s", tc.typ)
			}
			err := typ.Validate(json.RawMessage(tc.data))
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("Validate = %v, want a *ValidationError", err)
			}
			if !errors.Is(err, ErrInvalidData) {
				t.Errorf("error does not wrap ErrInvalidData")
			}
			if verr.Path != tc.wantPath || !strings.Contains(verr.Reason, tc.wantReason) {
				t.Errorf("got path %q reason %q, want path %q reason containing %q", verr.Path, verr.Reason, tc.wantPath, tc.wantReason)
			}
			wantInMsg := tc.wantPath
			if wantInMsg == "" {
				wantInMsg = "/"
			}
			if msg := err.Error(); !strings.Contains(msg, " at "+wantInMsg+": ") || !strings.Contains(msg, tc.typ) {
				t.Errorf("message %q does not name the path %q and the type", msg, wantInMsg)
			}
		})
	}
}

func TestValidateAcceptsExtraProperties(t *testing.T) {
	typ, _ := Lookup("message.sent")
	data := `{"messageId":"m1","sessionId":"s1","to":"+6281234567890","custom":{"crmId":7},"tags":["a"]}`
	if err := typ.Validate(json.RawMessage(data)); err != nil {
		t.Fatalf("extra properties refused: %v", err)
	}
}

func TestValidateReportsTheSamePathEveryTime(t *testing.T) {
	// Several violations: the reported one must not depend on map order.
	typ, _ := Lookup("campaign.completed")
	data := json.RawMessage(`{"campaignId":"c1","name":"n","total":"x","sent":"x","delivered":"x","failed":"x"}`)
	var first string
	for i := range 50 {
		err := typ.Validate(data)
		var verr *ValidationError
		if !errors.As(err, &verr) {
			t.Fatalf("Validate = %v", err)
		}
		if verr.Violations != 4 {
			t.Fatalf("Violations = %d, want 4", verr.Violations)
		}
		if i == 0 {
			first = err.Error()
		} else if err.Error() != first {
			t.Fatalf("message changed between runs: %q then %q", first, err.Error())
		}
	}
	want := "data does not match the campaign.completed schema: 4 violations: " +
		"/delivered: got string, want integer; /failed: got string, want integer; /sent: got string, want integer; /total: got string, want integer"
	if first != want {
		t.Fatalf("message = %q\nwant      %q", first, want)
	}
}

// Every violation is listed with its JSON Pointer, a missing property at
// its own path, in pointer order.
func TestValidateListsEveryViolation(t *testing.T) {
	typ, _ := Lookup("campaign.completed")
	err := typ.Validate(json.RawMessage(`{"campaignId":"","total":-1,"sent":"x","delivered":1.5,"failed":0,"sessionId":7,"completedAt":"yesterday"}`))
	verr, ok := errors.AsType[*ValidationError](err)
	if !ok {
		t.Fatalf("Validate = %v", err)
	}
	var pointers []string
	for _, v := range verr.List {
		if v.Reason == "" {
			t.Errorf("%s has no reason", v.Pointer)
		}
		pointers = append(pointers, v.Pointer)
		if !strings.Contains(err.Error(), v.Pointer+": "+v.Reason) {
			t.Errorf("the message does not name %s: %s", v.Pointer, v.Reason)
		}
	}
	want := []string{"/campaignId", "/completedAt", "/delivered", "/name", "/sent", "/sessionId", "/total"}
	if strings.Join(pointers, " ") != strings.Join(want, " ") || verr.Violations != len(want) {
		t.Errorf("violations %v (%d), want %v", pointers, verr.Violations, want)
	}
	if strings.Contains(err.Error(), "more") {
		t.Errorf("nothing is left out: %q", err)
	}
}

// Past MaxListedViolations the message says how many were not listed.
func TestValidationErrorNamesWhatItLeftOut(t *testing.T) {
	e := &ValidationError{Type: "message.sent", Violations: MaxListedViolations + 3}
	for i := range MaxListedViolations {
		e.List = append(e.List, Violation{Pointer: fmt.Sprintf("/f%02d", i), Reason: "wrong"})
	}
	msg := e.Error()
	if !strings.HasSuffix(msg, "/f09: wrong; and 3 more not listed") || !strings.Contains(msg, ": 13 violations: /f00: wrong; /f01: wrong;") {
		t.Errorf("message %q", msg)
	}
	one := &ValidationError{Type: "message.sent", Path: "", Reason: "got array, want object", Violations: 1}
	if got := one.Error(); got != "data does not match the message.sent schema at /: got array, want object" {
		t.Errorf("one violation: %q", got)
	}
}

func TestValidateBoundsTheReason(t *testing.T) {
	typ, _ := Lookup("message.sent")
	data := json.RawMessage(`{"messageId":"m1","sessionId":"s1","to":"` + strings.Repeat("9", 5000) + `"}`)
	err := typ.Validate(data)
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("error is %d bytes: %v", len(err.Error()), err)
	}
}

func TestZeroTypeDoesNotValidate(t *testing.T) {
	if err := (Type{Name: "nope"}).Validate(json.RawMessage(`{}`)); err == nil {
		t.Fatal("a Type not from the catalog validated data")
	}
}

func TestValidateRefusesNumbersOutOfFloatRange(t *testing.T) {
	typ, _ := Lookup("campaign.completed")
	err := typ.Validate(json.RawMessage(`{"campaignId":"c","name":"n","total":1,"sent":0,"delivered":0,"failed":0,"extra":{"list":[1,1e400]}}`))
	var verr *ValidationError
	if !errors.As(err, &verr) || verr.Path != "/extra/list/1" || !strings.Contains(verr.Reason, "out of the range") {
		t.Fatalf("Validate = %v", err)
	}
}

func TestPhoneNumbersUseTheE164Pattern(t *testing.T) {
	for _, typ := range Types() {
		var s struct {
			Properties map[string]struct {
				Pattern string `json:"pattern"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(typ.Schema, &s); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"to", "phoneNumber"} {
			if p, ok := s.Properties[name]; ok && p.Pattern != e164Pattern {
				t.Errorf("%s: %s has pattern %q, want %q", typ.Name, name, p.Pattern, e164Pattern)
			}
		}
	}
}
