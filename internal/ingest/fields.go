package ingest

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// objectFields splits a posted event into its members' raw values, exactly
// as json.Unmarshal into a map[string]json.RawMessage does (the later of two
// equal names wins), without encoding/json's reflection and copies: every
// event goes through here. Anything but a valid JSON object goes to
// json.Unmarshal, for its errors and its answer to null.
func objectFields(body []byte) (map[string]json.RawMessage, error) {
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' || !json.Valid(body) {
		var fields map[string]json.RawMessage
		err := json.Unmarshal(body, &fields)
		return fields, err
	}
	// body is a valid object from here on, so every index below is in range.
	fields := make(map[string]json.RawMessage, len(eventFields))
	i = skipSpace(body, i+1)
	if body[i] == '}' {
		return fields, nil
	}
	for {
		end := stringEnd(body, i)
		key := body[i:end]
		var name string
		if bytes.IndexByte(key, '\\') < 0 && utf8.Valid(key) {
			name = string(key[1 : len(key)-1])
		} else if err := json.Unmarshal(key, &name); err != nil {
			return nil, err
		}
		i = skipSpace(body, skipSpace(body, end)+1) // past the colon
		end = valueEnd(body, i)
		fields[name] = body[i:end:end]
		i = skipSpace(body, end)
		if body[i] == '}' {
			return fields, nil
		}
		i = skipSpace(body, i+1) // past the comma
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for j := i + 1; ; j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
}

// valueEnd returns the index just past the value that starts at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; ; {
			switch b[j] {
			case '"':
				j = stringEnd(b, j)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
			j++
		}
	default: // a number, true, false or null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
			j++
		}
		return j
	}
}
