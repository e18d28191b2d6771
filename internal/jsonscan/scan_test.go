package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

// accepts reports whether a Scanner reads b as one JSON value with
// optional whitespace around it.
func accepts(b []byte) bool {
	s := New(b)
	s.WS()
	if !s.Value() {
		return false
	}
	s.WS()
	return s.Done()
}

// FuzzScannerAgreesWithEncodingJSON holds a Scanner to its contract: it
// never accepts what encoding/json refuses, and it refuses what
// encoding/json accepts only for a number outside a float64's range (which
// json.Unmarshal into an any refuses too).
func FuzzScannerAgreesWithEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{}`, ` { } `, `[]`, `null`, `true`, `false`, `"s"`, `0`, `-0.5e-3`, `1E+2`, ``, ` `,
		`{"type":"message.sent","data":{"x":[1,{"y":"}"}],"z":"\\\""}}`,
		`{"a":1,}`, `{"a" 1}`, `[1 2]`, `[1,]`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `tru`, `nul`, `{"a":1}x`,
		`"\u00e9\ud83d\ude00"`, `"\x"`, `"\u12"`, `"\u12G4"`, "\"\x01\"", "\"\xff\"", `"unterminated`,
		`1e400`, `-1e400`, `[` + strings.Repeat("9", 400) + `]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, valid := accepts(b), json.Valid(b)
		if got && !valid {
			t.Fatalf("accepted %q, which encoding/json refuses", b)
		}
		if !got && valid {
			var v any
			if err := json.Unmarshal(b, &v); err == nil {
				t.Fatalf("refused %q, which encoding/json accepts", b)
			}
		}
	})
}

func TestScannerDepthIsBounded(t *testing.T) {
	ok := []byte(strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth))
	if !accepts(ok) {
		t.Errorf("refused %d levels", MaxDepth)
	}
	deep := []byte(strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1))
	if accepts(deep) || json.Valid(deep) {
		t.Errorf("accepted %d levels (encoding/json: %v)", MaxDepth+1, json.Valid(deep))
	}
}

func TestScannerReportsStringsAndNumbers(t *testing.T) {
	s := New([]byte(`"a\"b" -12.5e1 "plain"`))
	raw, escaped, ok := s.Str()
	if !ok || !escaped || string(raw) != `a\"b` {
		t.Errorf("Str = %q, %v, %v", raw, escaped, ok)
	}
	s.WS()
	if lit, ok := s.Number(); !ok || string(lit) != "-12.5e1" {
		t.Errorf("Number = %q, %v", lit, ok)
	}
	s.WS()
	if raw, escaped, ok := s.Str(); !ok || escaped || string(raw) != "plain" || !s.Done() {
		t.Errorf("Str = %q, %v, %v; done %v", raw, escaped, ok, s.Done())
	}
}
