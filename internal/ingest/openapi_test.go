package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	vErrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/wablast/webhook-operator/internal/catalog"
)

func openAPIValidator(t *testing.T) validator.Validator {
	t.Helper()
	b, err := OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(b)
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("building a validator: %v", errs)
	}
	return v
}

func TestTheOpenAPIDocumentIsValid(t *testing.T) {
	v := openAPIValidator(t)
	if ok, errs := v.ValidateDocument(); !ok {
		for _, e := range errs {
			t.Errorf("%s: %s", e.Message, e.Reason)
		}
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
	}
	b, _ := OpenAPI()
	if err := json.Unmarshal(b, &doc); err != nil || doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q %v, want 3.1.0", doc.OpenAPI, err)
	}
}

// Every catalog example, posted as an event, is a valid request by the
// document, and a wrong one is not: the document has the catalog's
// schemas, not a looser copy.
func TestTheOpenAPIDocumentHasTheCatalogsSchemas(t *testing.T) {
	v := openAPIValidator(t)
	request := func(body string) *http.Request {
		r, err := http.NewRequest(http.MethodPost, "http://ingest.example/v1/namespaces/shop/events", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer x")
		return r
	}
	for _, typ := range catalog.Types() {
		if typ.Reserved {
			continue
		}
		body := fmt.Sprintf(`{"id":"evt-1","type":%q,"timestamp":"2026-12-07T10:00:00Z","data":%s}`, typ.Name, typ.Example)
		if ok, errs := v.ValidateHttpRequest(request(body)); !ok {
			t.Errorf("%s's example: %s", typ.Name, messages(errs))
		}
	}
	for name, body := range map[string]string{
		"unknown type":             `{"type":"message.read","data":{}}`,
		"the reserved type":        `{"type":"webhook.test","data":{}}`,
		"a required field missing": `{"type":"message.sent","data":{"messageId":"m-1"}}`,
		"a bad phone number":       `{"type":"message.sent","data":{"messageId":"m-1","sessionId":"s-1","to":"0812"}}`,
		"an unknown top-level key": `{"type":"message.sent","extra":1,"data":{"messageId":"m-1","sessionId":"s-1","to":"+6281234567890"}}`,
		"a bad id":                 `{"id":"a b","type":"message.sent","data":{"messageId":"m-1","sessionId":"s-1","to":"+6281234567890"}}`,
	} {
		if ok, _ := v.ValidateHttpRequest(request(body)); ok {
			t.Errorf("%s: the document accepts %s", name, body)
		}
	}
}

func messages(errs []*vErrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "%s (%s); ", e.Message, e.Reason)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "[%s at %s] ", se.Reason, se.FieldPath)
		}
	}
	return b.String()
}

// The document lists every error code the API has.
func TestTheOpenAPIDocumentListsEveryErrorCode(t *testing.T) {
	src, err := os.ReadFile("errors.go")
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, m := range regexp.MustCompile(`(?m)^\s*Code[A-Za-z]+\s*=\s*"([a-z_]+)"`).FindAllSubmatch(src, -1) {
		declared = append(declared, string(m[1]))
	}
	listed := errorCodes()
	slices.Sort(declared)
	slices.Sort(listed)
	if len(declared) == 0 || !slices.Equal(declared, listed) {
		t.Errorf("errors.go declares %v, the document lists %v", declared, listed)
	}
}

// docs/openapi.json is the document the server serves.
func TestDocsOpenAPIIsCurrent(t *testing.T) {
	b, err := OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile("../../docs/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, file) {
		t.Error("docs/openapi.json is stale: run make generate")
	}
}
