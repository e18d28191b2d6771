package ingest

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/wablast/webhook-operator/internal/jsonscan"
)

// duplicateKey finds the first object in data, which must be valid JSON,
// that has two members of the same name (after unescaping). It returns the
// JSON Pointer (RFC 6901) of that object ("" for data itself) and the name.
// JSON parsers disagree on which of two equal names counts (encoding/json
// and most keep the last, some the first), so data with one is refused:
// the schema would have checked one value and a receiver could read the
// other.
func duplicateKey(data []byte) (path, key string, found bool) {
	d := dupFinder{s: jsonscan.New(data)}
	d.s.WS()
	d.value()
	if d.key == nil {
		return "", "", false
	}
	var b strings.Builder
	for i := len(d.path) - 1; i >= 0; i-- { // appended innermost first
		b.WriteByte('/')
		b.WriteString(escapePointer(d.path[i]))
	}
	return b.String(), *d.key, true
}

// dupFinder walks valid JSON; on the first duplicate it sets key and path
// (the tokens from the object out to data, innermost first) and stops.
type dupFinder struct {
	s    jsonscan.Scanner
	key  *string
	path []string
}

// value reads one value; it returns false once a duplicate is found (or on
// input it does not understand, which cannot happen on valid JSON).
func (d *dupFinder) value() bool {
	switch d.s.Peek() {
	case '{':
		return d.object()
	case '[':
		d.s.I++
		if d.s.Next(']') {
			return true
		}
		for i := 0; ; i++ {
			d.s.WS()
			if !d.value() {
				if d.key != nil {
					d.path = append(d.path, strconv.Itoa(i))
				}
				return false
			}
			if d.s.Next(',') {
				continue
			}
			return d.s.Next(']')
		}
	default:
		return d.s.Value()
	}
}

// object reads an object, comparing each member's name with the ones
// before it: pairwise for the few members events have, through a set for
// large objects.
func (d *dupFinder) object() bool {
	d.s.I++
	if d.s.Next('}') {
		return true
	}
	var (
		small [16][]byte
		names = small[:0]
		set   map[string]struct{}
	)
	for {
		d.s.WS()
		start := d.s.I
		raw, escaped, ok := d.s.Str()
		if !ok {
			return false
		}
		name := raw
		if escaped {
			var s string
			if json.Unmarshal(d.s.B[start:d.s.I], &s) != nil {
				return false
			}
			name = []byte(s)
		}
		dup := false
		if set != nil {
			_, dup = set[string(name)]
			set[string(name)] = struct{}{}
		} else {
			for _, n := range names {
				if bytes.Equal(n, name) {
					dup = true
					break
				}
			}
			names = append(names, name)
			if len(names) > 32 {
				set = make(map[string]struct{}, 2*len(names))
				for _, n := range names {
					set[string(n)] = struct{}{}
				}
			}
		}
		if dup {
			k := string(name)
			d.key = &k
			return false
		}
		if !d.s.Next(':') {
			return false
		}
		d.s.WS()
		if !d.value() {
			if d.key != nil {
				d.path = append(d.path, string(name))
			}
			return false
		}
		if d.s.Next(',') {
			continue
		}
		return d.s.Next('}')
	}
}

// escapePointer escapes a JSON Pointer token.
func escapePointer(tok string) string {
	if !strings.ContainsAny(tok, "~/") {
		return tok
	}
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}
