// Package jsonscan reads JSON text in place, without building values, for
// the hot paths that only need to know that input is certainly valid and
// where its parts are: the ingestion API splitting a posted event into its
// members, and the catalog's compiled schema checks.
//
// A Scanner accepts a subset of what encoding/json accepts: every method
// returns false at anything it does not accept, and callers then leave the
// decision to encoding/json (or to the full JSON Schema validator), which
// also words the error. It refuses more than encoding/json only where
// saying yes would cost more than asking encoding/json: numbers outside a
// float64's range and nesting deeper than MaxDepth.
package jsonscan

import "strconv"

// MaxDepth bounds the nesting a Scanner follows (encoding/json refuses more
// than 10,000 levels too), so its recursion stays shallow.
const MaxDepth = 10000

// Scanner reads the JSON text B from offset I.
type Scanner struct {
	B     []byte
	I     int
	depth int // objects and arrays open
}

// New returns a Scanner at the start of b.
func New(b []byte) Scanner { return Scanner{B: b} }

// Done reports whether everything has been read.
func (s *Scanner) Done() bool { return s.I == len(s.B) }

// Enter opens an object or array, and reports whether the nesting is within
// MaxDepth; Leave closes it.
func (s *Scanner) Enter() bool {
	s.depth++
	return s.depth <= MaxDepth
}

// Leave closes what Enter opened.
func (s *Scanner) Leave() { s.depth-- }

// WS skips whitespace.
func (s *Scanner) WS() {
	for s.I < len(s.B) {
		switch s.B[s.I] {
		case ' ', '\t', '\n', '\r':
			s.I++
		default:
			return
		}
	}
}

// Next consumes c after optional whitespace.
func (s *Scanner) Next(c byte) bool {
	s.WS()
	if s.I < len(s.B) && s.B[s.I] == c {
		s.I++
		return true
	}
	return false
}

// Peek is the next byte, or 0 at the end.
func (s *Scanner) Peek() byte {
	if s.I < len(s.B) {
		return s.B[s.I]
	}
	return 0
}

// Value reads any JSON value.
func (s *Scanner) Value() bool {
	switch s.Peek() {
	case '"':
		_, _, ok := s.Str()
		return ok
	case '{':
		s.I++
		if !s.Enter() {
			return false
		}
		defer s.Leave()
		if s.Next('}') {
			return true
		}
		for {
			s.WS()
			if _, _, ok := s.Str(); !ok || !s.Next(':') {
				return false
			}
			s.WS()
			if !s.Value() {
				return false
			}
			if s.Next(',') {
				continue
			}
			return s.Next('}')
		}
	case '[':
		s.I++
		if !s.Enter() {
			return false
		}
		defer s.Leave()
		if s.Next(']') {
			return true
		}
		for {
			s.WS()
			if !s.Value() {
				return false
			}
			if s.Next(',') {
				continue
			}
			return s.Next(']')
		}
	case 't':
		return s.Literal("true")
	case 'f':
		return s.Literal("false")
	case 'n':
		return s.Literal("null")
	default:
		_, ok := s.Number()
		return ok
	}
}

// Literal consumes lit.
func (s *Scanner) Literal(lit string) bool {
	if len(s.B)-s.I >= len(lit) && string(s.B[s.I:s.I+len(lit)]) == lit {
		s.I += len(lit)
		return true
	}
	return false
}

// Str reads a string and returns its raw contents (between the quotes) and
// whether it holds escapes. Its bytes are not checked to be UTF-8, as
// encoding/json does not.
func (s *Scanner) Str() (raw []byte, escaped, ok bool) {
	if s.Peek() != '"' {
		return nil, false, false
	}
	start := s.I + 1
	for i := start; i < len(s.B); i++ {
		switch c := s.B[i]; {
		case c == '"':
			s.I = i + 1
			return s.B[start:i], escaped, true
		case c == '\\':
			escaped = true
			i++
			if i >= len(s.B) {
				return nil, false, false
			}
			switch s.B[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(s.B) {
					return nil, false, false
				}
				for _, h := range s.B[i+1 : i+5] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				i += 4
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		}
	}
	return nil, false, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// IsDigit reports whether c is an ASCII digit.
func IsDigit(c byte) bool { return c >= '0' && c <= '9' }

// Number reads a number and returns its literal; it refuses one that does
// not fit a float64.
func (s *Scanner) Number() ([]byte, bool) {
	start := s.I
	b := s.B
	i := s.I
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && IsDigit(b[i]) {
			i++
		}
	default:
		return nil, false
	}
	simple := true
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !IsDigit(b[i]) {
			return nil, false
		}
		for i < len(b) && IsDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		simple = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !IsDigit(b[i]) {
			return nil, false
		}
		for i < len(b) && IsDigit(b[i]) {
			i++
		}
	}
	lit := b[start:i]
	// Without an exponent, a literal this short is far inside a float64's range.
	if !simple || len(lit) > 300 {
		if _, err := strconv.ParseFloat(string(lit), 64); err != nil {
			return nil, false
		}
	}
	s.I = i
	return lit, true
}
