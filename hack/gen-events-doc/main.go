// Command gen-events-doc renders docs/events.md, the receiver's and the
// producer's guide, from the event catalog (internal/catalog), the receiver
// snippets in receiver/ (compiled and tested) and events.md.tmpl.
//
// Run it from the repository root:
//
//	go run ./hack/gen-events-doc          # write docs/events.md
//	go run ./hack/gen-events-doc -check   # exit 1 if docs/events.md is stale
package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/ingest"
)

var (
	//go:embed events.md.tmpl
	docTemplate string
	//go:embed receiver/verify.go
	goReceiver string
	//go:embed receiver/verify.js
	nodeReceiver string
)

func main() {
	out := flag.String("out", "docs/events.md", "the file to write, relative to the working directory")
	check := flag.Bool("check", false, "do not write; exit 1 if the file differs from what would be written")
	flag.Parse()
	if err := run(*out, *check, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gen-events-doc:", err)
		os.Exit(1)
	}
}

// errStale is returned by run with -check when the file is out of date.
var errStale = errors.New("stale")

func run(path string, check bool, stdout io.Writer) error {
	doc, err := render()
	if err != nil {
		return err
	}
	if check {
		current, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if !bytes.Equal(current, doc) {
			return fmt.Errorf("%s is %w: run 'go run ./hack/gen-events-doc' and commit the result", path, errStale)
		}
		return nil
	}
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s\n", path)
	return err
}

// apiErrorCode is one row of the error table.
type apiErrorCode struct {
	Status  int
	Code    string
	Meaning string
}

// errorCodes are the ingestion API's errors, in status order.
var errorCodes = []apiErrorCode{
	{400, ingest.CodeMalformedJSON, "The body (or a batch line) is not JSON, not UTF-8, not a JSON object, or holds more than one value."},
	{400, ingest.CodeInvalidEvent, "The event object is malformed: `type` missing or not a string, `data` missing, a bad `id` or `timestamp`, or a top-level field other than `id`, `type`, `timestamp`, `data`."},
	{400, ingest.CodeInvalidBatch, "One or more lines of a batch are bad; `lines` lists them and `details` says why. Nothing of the batch was accepted."},
	{400, ingest.CodeInvalidNamespace, "The namespace in the path is not a valid namespace name."},
	{401, ingest.CodeUnauthenticated, "No `Authorization: Bearer` header, or a token that is neither a valid Kubernetes token for the audience `webhooks.wablast.io` nor a static ingest token of this namespace (a static token of another namespace gets exactly this answer). Comes with `WWW-Authenticate: Bearer`."},
	{403, ingest.CodeForbidden, "The ServiceAccount token is valid but its user may not create `webhookevents` in this namespace."},
	{404, ingest.CodeNotFound, "No such path."},
	{405, ingest.CodeMethodNotAllowed, "The path exists but not for this method; see the `Allow` header."},
	{413, ingest.CodeEventTooLarge, "The event is over the per-event size limit (or, in a batch, the line named in `details`)."},
	{413, ingest.CodeBatchTooLarge, "The batch body is over the batch size limit (8 MiB by default, `--max-batch-bytes`) or holds more than 1000 events: split it."},
	{415, ingest.CodeUnsupportedMediaType, "`Content-Type` is neither `application/json` nor `application/x-ndjson`, or names a charset other than UTF-8."},
	{422, ingest.CodeUnknownEventType, "`type` is not one of the event types below."},
	{422, ingest.CodeReservedEventType, "`type` is `webhook.test`, which only the operator sends."},
	{422, ingest.CodeSchemaViolation, "`data` does not match the type's schema: it is not a JSON object, it names the same member twice in one object (parsers disagree on which value counts, so the schema could have checked the other one; the message names the member and the object's JSON Pointer), or it violates the schema (the message and `violations` name every violation, up to a cap, each with its JSON Pointer, such as `/to`)."},
	{429, ingest.CodeTooManyRequests, "The token is not known yet and checking it would exceed the limits on `TokenReview`s (per client address, overall, or at once). Nothing was checked; retry after `Retry-After` seconds."},
	{500, ingest.CodeInternal, "A bug in the dispatcher. Nothing is known to be accepted; retry with the same ids."},
	{503, ingest.CodeStoreUnavailable, "The event store did not acknowledge the events. Nothing is known to be accepted; retry (after `Retry-After` seconds) with the same ids."},
	{503, ingest.CodeOverloaded, "The bodies of the posts being read, decoded or stored at once already take the manager's bound (`--max-decoding-bytes`, 32 MiB by default). Nothing was read; retry after `Retry-After` seconds."},
	{503, ingest.CodeAuthUnavailable, "The token could not be checked because the Kubernetes API did not answer. Retry."},
}

// eventType is what the template sees of one catalog type.
type eventType struct {
	Name        string
	Anchor      string
	Description string
	Reserved    bool
	Fields      []field
	Schema      string
	Example     string
	Envelope    string
}

// field is one row of a type's field table.
type field struct {
	Path        string
	Type        string
	Required    bool
	Description string
}

// render returns the document.
func render() ([]byte, error) {
	var types []eventType
	for _, t := range catalog.Types() {
		fields, err := fieldsOf(t.Schema, "")
		if err != nil {
			return nil, fmt.Errorf("reading the schema of %s: %w", t.Name, err)
		}
		ev := delivery.Event{Type: t.Name, Timestamp: time.Date(2026, 11, 28, 10, 15, 2, 123e6, time.UTC), Data: t.Example}
		envelope, err := ev.Envelope()
		if err != nil {
			return nil, err
		}
		types = append(types, eventType{
			Name:        t.Name,
			Anchor:      strings.ReplaceAll(t.Name, ".", ""),
			Description: t.Description,
			Reserved:    t.Reserved,
			Fields:      fields,
			Schema:      strings.TrimSpace(string(t.Schema)),
			Example:     indent(t.Example),
			Envelope:    indent(envelope),
		})
	}
	tmpl, err := template.New("events.md").Funcs(template.FuncMap{
		"code": func(s string) string { return "`" + s + "`" },
	}).Parse(docTemplate)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, map[string]any{
		"Types":          types,
		"GoReceiver":     strings.TrimSpace(goReceiver),
		"NodeReceiver":   strings.TrimSpace(nodeReceiver),
		"MaxEventBytes":  ingest.DefaultMaxEventBytes,
		"MaxBatchEvents": ingest.MaxBatchEvents,
		"MaxBatchBytes":  ingest.DefaultMaxBatchBytes,
		"MaxDecoding":    ingest.DefaultMaxDecodingBytes,
		"MaxIDLength":    ingest.MaxIDLength,
		"MaxViolations":  catalog.MaxListedViolations,
		"Errors":         errorCodes,
		"TokenLabel":     ingest.LabelIngestToken,
		"TokenKey":       ingest.IngestTokenKey,
		"MinTokenBytes":  ingest.MinStaticTokenBytes,
	})
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// indent pretty-prints JSON with two spaces.
func indent(raw []byte) string {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return strings.TrimSpace(buf.String())
}

// schemaNode is the part of a JSON Schema the field table shows.
type schemaNode struct {
	Type        string          `json:"type"`
	Description string          `json:"description"`
	Format      string          `json:"format"`
	Pattern     string          `json:"pattern"`
	MinLength   *int            `json:"minLength"`
	MaxLength   *int            `json:"maxLength"`
	Minimum     *float64        `json:"minimum"`
	Properties  json.RawMessage `json:"properties"`
	Required    []string        `json:"required"`
}

// fieldsOf lists the properties of an object schema in the schema's order,
// nested objects flattened as "parent.child".
func fieldsOf(schema json.RawMessage, prefix string) ([]field, error) {
	var node schemaNode
	if err := json.Unmarshal(schema, &node); err != nil {
		return nil, err
	}
	if len(node.Properties) == 0 {
		return nil, nil
	}
	names, props, err := orderedObject(node.Properties)
	if err != nil {
		return nil, err
	}
	var out []field
	for _, name := range names {
		var p schemaNode
		if err := json.Unmarshal(props[name], &p); err != nil {
			return nil, err
		}
		out = append(out, field{
			Path:        prefix + name,
			Type:        describeType(p),
			Required:    slices.Contains(node.Required, name),
			Description: p.Description,
		})
		if p.Type == "object" {
			nested, err := fieldsOf(props[name], prefix+name+".")
			if err != nil {
				return nil, err
			}
			out = append(out, nested...)
		}
	}
	return out, nil
}

// describeType renders a property's type and constraints for the table.
func describeType(p schemaNode) string {
	parts := []string{p.Type}
	switch {
	case p.Pattern == `^\+[1-9][0-9]{6,14}$`:
		parts = []string{"string (E.164 phone number)"}
	case p.Format == "date-time":
		parts = []string{"string (RFC 3339 time)"}
	case p.Pattern != "":
		parts = append(parts, "matching `"+p.Pattern+"`")
	}
	if p.MinLength != nil && p.MaxLength != nil {
		parts = append(parts, fmt.Sprintf("%d..%d characters", *p.MinLength, *p.MaxLength))
	} else if p.MinLength != nil && *p.MinLength > 0 {
		parts = append(parts, "non-empty")
	}
	if p.Minimum != nil {
		parts = append(parts, fmt.Sprintf(">= %g", *p.Minimum))
	}
	return strings.Join(parts, ", ")
}

// orderedObject returns the keys of a JSON object in document order and
// its values.
func orderedObject(raw json.RawMessage) ([]string, map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, fmt.Errorf("not a JSON object")
	}
	var keys []string
	values := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		key := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		keys = append(keys, key)
		values[key] = v
	}
	return keys, values, nil
}
