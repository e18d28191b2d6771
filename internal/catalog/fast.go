package catalog

import (
	"encoding/json"
	"regexp"
	"strconv"
	"unicode/utf8"

	"github.com/wablast/webhook-operator/internal/jsonscan"
)

// fastObject is a check compiled from an object schema that uses only the
// keywords the catalog's schemas use (type, properties, required,
// additionalProperties: true, minLength, maxLength, pattern, format
// date-time, minimum on integers, and annotations). It reads the JSON
// data once, without building values, and answers one question: is the
// data certainly valid? "No" does not mean invalid: Validate then runs the
// full JSON Schema validator, which decides and names the violation. So the
// fast check may refuse more than the schema does (escaped strings under a
// constraint, integers written as 1.0, a date-time with a leap second,
// duplicate keys), but never accepts what the schema refuses; a fuzz test
// holds it to that.
type fastObject struct {
	props    []fastProp
	required uint64 // bit i: props[i] is required
}

// fastProp is one property's check.
type fastProp struct {
	name     string
	kind     string // "string", "integer", "number", "boolean" or "object"
	minLen   int    // -1: none
	maxLen   int    // -1: none
	pattern  *regexp.Regexp
	dateTime bool
	hasMin   bool
	min      int64
	object   *fastObject
}

// annotations are keywords that never make data invalid.
var annotations = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "title": true, "description": true, "examples": true,
}

// compileFast compiles an object schema (as jsonschema.UnmarshalJSON parses
// it) into a fast check, or returns false when it uses anything else.
func compileFast(schema any) (*fastObject, bool) {
	m, ok := schema.(map[string]any)
	if !ok || m["type"] != "object" {
		return nil, false
	}
	o := &fastObject{}
	for k, v := range m {
		switch {
		case annotations[k], k == "type", k == "properties", k == "required":
		case k == "additionalProperties":
			if b, isBool := v.(bool); !isBool || !b {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	props, _ := m["properties"].(map[string]any)
	if len(props) > 64 {
		return nil, false
	}
	for name, ps := range props {
		p, ok := compileProp(name, ps)
		if !ok {
			return nil, false
		}
		o.props = append(o.props, p)
	}
	if req, present := m["required"]; present {
		list, ok := req.([]any)
		if !ok {
			return nil, false
		}
		for _, r := range list {
			name, ok := r.(string)
			if !ok {
				return nil, false
			}
			i := o.index(name)
			if i < 0 {
				// Required but not described: no property check to mark it seen.
				return nil, false
			}
			o.required |= 1 << i
		}
	}
	return o, true
}

func compileProp(name string, schema any) (fastProp, bool) {
	p := fastProp{name: name, minLen: -1, maxLen: -1}
	m, ok := schema.(map[string]any)
	if !ok {
		return p, false
	}
	if p.kind, ok = m["type"].(string); !ok {
		return p, false
	}
	if p.kind == "object" {
		o, ok := compileFast(m)
		p.object = o
		return p, ok
	}
	for k, v := range m {
		switch {
		case annotations[k], k == "type":
		case p.kind == "string" && (k == "minLength" || k == "maxLength"):
			n, ok := smallInt(v)
			if !ok || n < 0 {
				return p, false
			}
			if k == "minLength" {
				p.minLen = int(n)
			} else {
				p.maxLen = int(n)
			}
		case p.kind == "string" && k == "pattern":
			s, ok := v.(string)
			if !ok {
				return p, false
			}
			re, err := regexp.Compile(s)
			if err != nil {
				return p, false
			}
			p.pattern = re
		case p.kind == "string" && k == "format":
			if v != "date-time" {
				return p, false
			}
			p.dateTime = true
		case p.kind == "integer" && k == "minimum":
			n, ok := smallInt(v)
			if !ok {
				return p, false
			}
			p.hasMin, p.min = true, n
		default:
			return p, false
		}
	}
	switch p.kind {
	case "string", "integer", "number", "boolean":
		return p, true
	}
	return p, false
}

// smallInt reads a schema number that is an integer of at most 2^53.
func smallInt(v any) (int64, bool) {
	num, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n > 1<<53 || n < -(1<<53) {
		return 0, false
	}
	return n, true
}

func (o *fastObject) index(name string) int {
	for i := range o.props {
		if o.props[i].name == name {
			return i
		}
	}
	return -1
}

// valid reports whether data is certainly a JSON object that satisfies o,
// with every number in the range of a float64.
func (o *fastObject) valid(data []byte) bool {
	s := scanner{jsonscan.New(data)}
	s.WS()
	if !s.object(o) {
		return false
	}
	s.WS()
	return s.Done()
}

// scanner reads JSON with the checks of a compiled schema. Every method
// returns false at anything it does not accept, leaving the decision to the
// full validator.
type scanner struct{ jsonscan.Scanner }

// object reads an object whose known members satisfy o (nil: any object).
func (s *scanner) object(o *fastObject) bool {
	if !s.Next('{') || !s.Enter() {
		return false
	}
	defer s.Leave()
	var seen uint64
	if s.Next('}') {
		return o == nil || o.required == 0
	}
	for {
		s.WS()
		key, escaped, ok := s.Str()
		if !ok || !s.Next(':') {
			return false
		}
		s.WS()
		i := -1
		if o != nil {
			if escaped {
				return false // the key could be a property's name in disguise
			}
			i = o.index(string(key))
		}
		if i >= 0 {
			if seen&(1<<i) != 0 {
				return false // duplicate key: the last one counts; let the full validator judge
			}
			seen |= 1 << i
			if !s.prop(&o.props[i]) {
				return false
			}
		} else if !s.Value() {
			return false
		}
		if s.Next(',') {
			continue
		}
		if !s.Next('}') {
			return false
		}
		return o == nil || seen&o.required == o.required
	}
}

// prop reads a value that must satisfy p.
func (s *scanner) prop(p *fastProp) bool {
	switch p.kind {
	case "object":
		return s.Peek() == '{' && s.object(p.object)
	case "boolean":
		return s.Literal("true") || s.Literal("false")
	case "number":
		_, ok := s.Number()
		return ok
	case "integer":
		lit, ok := s.Number()
		if !ok {
			return false
		}
		n, ok := plainInt(lit)
		return ok && (!p.hasMin || n >= p.min)
	}
	// string
	if s.Peek() != '"' {
		return false
	}
	raw, escaped, ok := s.Str()
	if !ok {
		return false
	}
	if p.minLen < 0 && p.maxLen < 0 && p.pattern == nil && !p.dateTime {
		return true
	}
	if escaped || !utf8.Valid(raw) {
		return false
	}
	if p.minLen >= 0 || p.maxLen >= 0 {
		n := utf8.RuneCount(raw)
		if n < p.minLen || (p.maxLen >= 0 && n > p.maxLen) {
			return false
		}
	}
	if p.pattern != nil && !p.pattern.Match(raw) {
		return false
	}
	return !p.dateTime || plainDateTime(raw)
}

// plainInt reads an integer literal without fraction or exponent that fits
// in 18 digits.
func plainInt(lit []byte) (int64, bool) {
	neg := len(lit) > 0 && lit[0] == '-'
	digits := lit
	if neg {
		digits = lit[1:]
	}
	if len(digits) == 0 || len(digits) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if !jsonscan.IsDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// plainDateTime accepts the RFC 3339 date-times producers send:
// YYYY-MM-DDTHH:MM:SS, an optional fraction, and Z or an offset, with every
// field in range and no leap second (those go to the full validator).
func plainDateTime(b []byte) bool {
	if len(b) < 20 {
		return false
	}
	num := func(from, to int) (int, bool) {
		n := 0
		for _, c := range b[from:to] {
			if !jsonscan.IsDigit(c) {
				return 0, false
			}
			n = n*10 + int(c-'0')
		}
		return n, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 7)
	day, ok3 := num(8, 10)
	hour, ok4 := num(11, 13)
	minute, ok5 := num(14, 16)
	second, ok6 := num(17, 19)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 ||
		b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return false
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || second > 59 {
		return false
	}
	rest := b[19:]
	if rest[0] == '.' {
		i := 1
		for i < len(rest) && jsonscan.IsDigit(rest[i]) {
			i++
		}
		if i == 1 {
			return false
		}
		rest = rest[i:]
	}
	switch {
	case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
		return true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := num(len(b)-5, len(b)-3)
		om, ok2 := num(len(b)-2, len(b))
		return ok1 && ok2 && oh <= 23 && om <= 59
	}
	return false
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
