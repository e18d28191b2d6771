package catalog

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// The event type names.
const (
	MessageSent         = "message.sent"
	MessageDelivered    = "message.delivered"
	MessageFailed       = "message.failed"
	SessionConnected    = "session.connected"
	SessionDisconnected = "session.disconnected"
	CampaignStarted     = "campaign.started"
	CampaignCompleted   = "campaign.completed"
	// WebhookTest is sent only by test deliveries; producers cannot post it.
	WebhookTest = "webhook.test"
)

// names lists every type in catalog order: the order of Types, of GET
// /v1/event-types and of docs/events.md.
var names = []string{
	MessageSent, MessageDelivered, MessageFailed,
	SessionConnected, SessionDisconnected,
	CampaignStarted, CampaignCompleted,
	WebhookTest,
}

//go:embed schemas/*.json examples/*.json
var files embed.FS

// Type is one event type of the catalog.
type Type struct {
	// Name is the type's name, such as "message.sent": the envelope's "type".
	Name string
	// Description says when an event of this type is emitted. It is the
	// schema's "description".
	Description string
	// Schema is the JSON Schema (draft 2020-12) of the event's data object,
	// as stored. Do not modify it.
	Schema json.RawMessage
	// Example is an example data object that validates against Schema, as
	// stored. Do not modify it.
	Example json.RawMessage
	// Reserved is true for a type that only the operator emits (webhook.test);
	// the ingestion API refuses it.
	Reserved bool

	compiled *jsonschema.Schema
	// fast accepts the common valid data without the full validator (nil
	// when the schema uses a keyword it does not know).
	fast *fastObject
}

var (
	types  []Type
	byName map[string]*Type
)

func init() {
	var err error
	if types, err = load(); err != nil {
		panic(fmt.Sprintf("catalog: %v", err))
	}
	byName = make(map[string]*Type, len(types))
	for i := range types {
		byName[types[i].Name] = &types[i]
	}
}

// load reads and compiles every embedded schema and example.
func load() ([]Type, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	out := make([]Type, 0, len(names))
	for _, name := range names {
		schema, err := files.ReadFile("schemas/" + name + ".json")
		if err != nil {
			return nil, fmt.Errorf("reading the schema of %s: %w", name, err)
		}
		example, err := files.ReadFile("examples/" + name + ".json")
		if err != nil {
			return nil, fmt.Errorf("reading the example of %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
		if err != nil {
			return nil, fmt.Errorf("parsing the schema of %s: %w", name, err)
		}
		var meta struct {
			Description string `json:"description"`
		}
		if err := json.Unmarshal(schema, &meta); err != nil || meta.Description == "" {
			return nil, fmt.Errorf("the schema of %s has no description", name)
		}
		url := "catalog:///schemas/" + name + ".json"
		if id, ok := doc.(map[string]any)["$id"].(string); ok {
			url = id
		}
		if err := c.AddResource(url, doc); err != nil {
			return nil, fmt.Errorf("adding the schema of %s: %w", name, err)
		}
		compiled, err := c.Compile(url)
		if err != nil {
			return nil, fmt.Errorf("compiling the schema of %s: %w", name, err)
		}
		fast, _ := compileFast(doc)
		out = append(out, Type{
			Name:        name,
			Description: meta.Description,
			Schema:      json.RawMessage(schema),
			Example:     json.RawMessage(example),
			Reserved:    name == WebhookTest,
			compiled:    compiled,
			fast:        fast,
		})
	}
	return out, nil
}

// Types returns every event type in catalog order: the message, session
// and campaign types, then webhook.test. The slice is a copy; the Schema
// and Example bytes are shared and must not be modified.
func Types() []Type {
	return append([]Type(nil), types...)
}

// Lookup returns the type named name and true, or the zero Type and false
// when the catalog has no such type.
func Lookup(name string) (Type, bool) {
	t, ok := byName[name]
	if !ok {
		return Type{}, false
	}
	return *t, true
}

// Names returns the names of every type in catalog order.
func Names() []string {
	return append([]string(nil), names...)
}

// ErrInvalidData is wrapped by every error Validate returns.
var ErrInvalidData = errors.New("invalid event data")

// MaxListedViolations bounds the violations a ValidationError lists (and
// its message names); the total is still counted.
const MaxListedViolations = 10

// Violation is one place where data does not match its schema.
type Violation struct {
	// Pointer is the JSON Pointer (RFC 6901) into the data object, such as
	// "/to" or "/error/code"; "" is the data object itself. For a missing
	// required property it is the property's path.
	Pointer string `json:"pointer"`
	// Reason says what is wrong there, such as "required property is
	// missing" or "got string, want integer".
	Reason string `json:"reason"`
}

// ValidationError is the error Validate returns when data is not JSON or
// does not match the type's schema. It lists every violation found, up to
// MaxListedViolations, each with its JSON Pointer, in pointer order; its
// message names them all (a few KiB at most).
type ValidationError struct {
	// Type is the event type whose schema was applied.
	Type string
	// Path and Reason are those of the first violation listed.
	Path, Reason string
	// List holds the violations, at most MaxListedViolations of them,
	// sorted by pointer.
	List []Violation
	// Violations is the total number of violations found, at least 1.
	Violations int
}

// Error returns "data does not match the <type> schema at <path>: <reason>"
// for one violation (with "/" standing for the data object itself), and for
// several "data does not match the <type> schema: N violations: <path>:
// <reason>; <path>: <reason>..." naming every one listed, and how many more
// were found beyond MaxListedViolations.
func (e *ValidationError) Error() string {
	list := e.List
	if len(list) == 0 {
		list = []Violation{{Pointer: e.Path, Reason: e.Reason}}
	}
	at := func(v Violation) string {
		if v.Pointer == "" {
			return "/"
		}
		return v.Pointer
	}
	if e.Violations <= 1 {
		return fmt.Sprintf("data does not match the %s schema at %s: %s", e.Type, at(list[0]), list[0].Reason)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "data does not match the %s schema: %d violations: ", e.Type, e.Violations)
	for i, v := range list {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", at(v), v.Reason)
	}
	if more := e.Violations - len(list); more > 0 {
		fmt.Fprintf(&b, "; and %d more not listed", more)
	}
	return b.String()
}

// Unwrap returns ErrInvalidData.
func (e *ValidationError) Unwrap() error { return ErrInvalidData }

// maxReasonBytes bounds a reason, which may quote the offending value.
const maxReasonBytes = 200

// Validate checks data against the type's schema. It returns nil when data
// is a JSON object matching the schema whose numbers all fit a float64.
// Otherwise it returns a *ValidationError (wrapping ErrInvalidData) listing
// the violations (up to MaxListedViolations) sorted by path, so the result
// does not depend on map order.
// On a Type that does not come from the catalog (the zero Type) it returns
// a plain error.
func (t Type) Validate(data json.RawMessage) error {
	if t.compiled == nil {
		return fmt.Errorf("event type %q is not in the catalog", t.Name)
	}
	if t.fast != nil && t.fast.valid(data) {
		return nil
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return &ValidationError{Type: t.Name, Reason: "not valid JSON: " + err.Error(), Violations: 1}
	}
	if anyOutOfRange(v) {
		path, _ := outOfRange(v, "")
		return &ValidationError{Type: t.Name, Path: path, Reason: "number is out of the range of a 64-bit float, which receivers cannot parse", Violations: 1}
	}
	err = t.compiled.Validate(v)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("validating %s data: %w", t.Name, err)
	}
	var leaves []violation
	collect(verr, &leaves)
	if len(leaves) == 0 {
		// Cannot happen: a failed validation has at least one leaf.
		leaves = append(leaves, violation{path: pointer(verr.InstanceLocation), reason: reason(verr.ErrorKind)})
	}
	sort.SliceStable(leaves, func(i, j int) bool {
		if leaves[i].path != leaves[j].path {
			return leaves[i].path < leaves[j].path
		}
		return leaves[i].reason < leaves[j].reason
	})
	list := make([]Violation, 0, min(len(leaves), MaxListedViolations))
	for _, l := range leaves[:min(len(leaves), MaxListedViolations)] {
		reason := l.reason
		if len(reason) > maxReasonBytes {
			reason = strings.ToValidUTF8(reason[:maxReasonBytes], "") + "..."
		}
		list = append(list, Violation{Pointer: l.path, Reason: reason})
	}
	return &ValidationError{Type: t.Name, Path: list[0].Pointer, Reason: list[0].Reason, List: list, Violations: len(leaves)}
}

// anyOutOfRange reports whether v holds a number that does not fit a
// float64, without building paths: outOfRange then finds which.
func anyOutOfRange(v any) bool {
	switch v := v.(type) {
	case json.Number:
		_, err := strconv.ParseFloat(string(v), 64)
		return err != nil
	case []any:
		return slices.ContainsFunc(v, anyOutOfRange)
	case map[string]any:
		for _, item := range v {
			if anyOutOfRange(item) {
				return true
			}
		}
	}
	return false
}

// outOfRange returns the path of the first number (in document order of
// arrays, sorted keys of objects) that does not fit a float64.
func outOfRange(v any, path string) (string, bool) {
	switch v := v.(type) {
	case json.Number:
		if _, err := strconv.ParseFloat(string(v), 64); err != nil {
			return path, true
		}
	case []any:
		for i, item := range v {
			if p, ok := outOfRange(item, path+"/"+strconv.Itoa(i)); ok {
				return p, true
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, ok := outOfRange(v[k], path+"/"+escape(k)); ok {
				return p, true
			}
		}
	}
	return "", false
}

type violation struct {
	path   string
	reason string
}

// collect appends the leaves of the error tree to out, splitting a
// "required" error into one violation per missing property, located at that
// property.
func collect(e *jsonschema.ValidationError, out *[]violation) {
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			collect(c, out)
		}
		return
	}
	base := pointer(e.InstanceLocation)
	if req, ok := e.ErrorKind.(*kind.Required); ok {
		for _, name := range req.Missing {
			*out = append(*out, violation{path: base + "/" + escape(name), reason: "required property is missing"})
		}
		return
	}
	*out = append(*out, violation{path: base, reason: reason(e.ErrorKind)})
}

// reason returns the library's English message for one error kind, without
// the location prefix it renders.
func reason(k jsonschema.ErrorKind) string {
	if p, ok := k.(*kind.Pattern); ok && p.Want == e164Pattern {
		return fmt.Sprintf("%s is not an E.164 phone number (\"+\", country code and number, digits only, such as \"+6281234567890\")", quoteValue(p.Got))
	}
	msg := (&jsonschema.ValidationError{ErrorKind: k}).Error()
	return strings.TrimPrefix(msg, "at '': ")
}

// e164Pattern is the pattern the schemas use for phone numbers.
const e164Pattern = `^\+[1-9][0-9]{6,14}$`

// quoteValue quotes a string value for a reason, shortened when long.
func quoteValue(v string) string {
	const maxValueBytes = 40
	if len(v) > maxValueBytes {
		v = strings.ToValidUTF8(v[:maxValueBytes], "") + "..."
	}
	return strconv.Quote(v)
}

// pointer renders instance location tokens as a JSON Pointer.
func pointer(tokens []string) string {
	var b strings.Builder
	for _, tok := range tokens {
		b.WriteByte('/')
		b.WriteString(escape(tok))
	}
	return b.String()
}

// escape escapes one JSON Pointer reference token (RFC 6901).
func escape(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}
