package ingest

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/wablast/webhook-operator/internal/jsonscan"
)

// objectFields splits a posted event into its members' raw values, exactly
// as json.Unmarshal into a map[string]json.RawMessage does (the later of two
// equal names wins), without encoding/json's reflection and copies: every
// event goes through here. It validates and splits in one pass; anything
// the scanner does not certainly accept as an object goes to json.Unmarshal,
// for its errors and its answer to null.
func objectFields(body []byte) (map[string]json.RawMessage, error) {
	if fields, ok := splitObject(body); ok {
		return fields, nil
	}
	var fields map[string]json.RawMessage
	err := json.Unmarshal(body, &fields)
	return fields, err
}

// splitObject is objectFields for a body that is certainly a valid object.
func splitObject(body []byte) (map[string]json.RawMessage, bool) {
	s := jsonscan.New(body)
	if !s.Next('{') || !s.Enter() {
		return nil, false
	}
	fields := make(map[string]json.RawMessage, len(eventFields))
	if !s.Next('}') {
		for {
			s.WS()
			keyStart := s.I
			key, escaped, ok := s.Str()
			if !ok {
				return nil, false
			}
			var name string
			if !escaped && utf8.Valid(key) {
				name = fieldName(key)
			} else if name, ok = unquote(body[keyStart:s.I]); !ok {
				return nil, false
			}
			if !s.Next(':') {
				return nil, false
			}
			s.WS()
			start := s.I
			if !s.Value() {
				return nil, false
			}
			fields[name] = body[start:s.I:s.I]
			if s.Next(',') {
				continue
			}
			if !s.Next('}') {
				return nil, false
			}
			break
		}
	}
	s.WS()
	return fields, s.Done()
}

// unquote decodes a JSON string with escapes (a rare key); its own variable
// keeps splitObject's on the stack.
func unquote(raw []byte) (string, bool) {
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err == nil
}

// fieldName is string(key), without an allocation for an event's own fields.
func fieldName(key []byte) string {
	for _, f := range eventFields {
		if string(key) == f {
			return f
		}
	}
	return string(key)
}
