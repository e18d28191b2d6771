package delivery

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// The envelope built from canonical data is byte for byte the one
// encoding/json builds from the data as posted.
func TestEnvelopeFromCanonicalDataIsWhatEncodingJSONWrites(t *testing.T) {
	ts := time.Date(2026, 11, 28, 10, 15, 2, 123456789, time.FixedZone("WIB", 7*3600))
	for _, data := range []string{
		`{}`,
		`{"messageId":"m1","to":"+6281234567890"}`,
		" {\n  \"text\": \"Hello Budi, order #1234 <b>shipped</b> & on its way\",\n  \"n\": [1, 2.5e3, -0, true, null]\n}\n",
		`{"s":"line\u2028sep\u2029end","raw":"` + "\u2028\u2029" + `","esc":"\u003c\"\\/"}`,
		`{"unicode":"é 日本 😀","nested":{"a":{"b":[{"c":"<&>"}]}}}`,
		`{"quote":"a \" b","backslash":"c:\\ d","tab":"\t"}`,
	} {
		canonical, err := CanonicalData([]byte(data))
		if err != nil {
			t.Fatalf("%q: %v", data, err)
		}
		fast := Event{Type: "message.sent", Timestamp: ts, Data: canonical, DataCanonical: true}
		slow := Event{Type: "message.sent", Timestamp: ts, Data: []byte(data)}
		got, err := fast.Envelope()
		if err != nil {
			t.Fatal(err)
		}
		want, err := slow.Envelope()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("data %q:\n got %s\nwant %s", data, got, want)
		}
	}
	// A type that needs escaping takes encoding/json's path.
	odd := Event{Type: `a"b`, Timestamp: ts, Data: []byte(`{}`), DataCanonical: true}
	if got, _ := odd.Envelope(); !bytes.HasPrefix(got, []byte(`{"type":"a\"b",`)) {
		t.Errorf("type with a quote: %s", got)
	}
	if _, err := CanonicalData([]byte(`{"a": `)); err == nil {
		t.Error("CanonicalData accepted invalid JSON that is not compact")
	}
	for data, want := range map[string]bool{
		`{}`: true, `{"a":"b c","d":[1,{"e":"\" x"}]}`: true, `{"a":"\\"}`: true,
		`{"a": 1}`: false, "{\"a\":1}\n": false, `{"a":"\\" ,"b":1}`: false, `[1, 2]`: false,
	} {
		if got, _ := inspect([]byte(data)); got != want {
			t.Errorf("inspect(%s) compact = %v, want %v", data, got, want)
		}
	}
	for data, want := range map[string]bool{
		`{}`: true, `{"a":"b"}`: true, `{"a":"\u003c"}`: true, `{"a":"é 日本 – ‘’"}`: true, "{\"a\":\"\u2027\u202a\"}": true,
		`{"a":"<"}`: false, `{"a":">"}`: false, `{"a":"x&y"}`: false, "{\"a\":\"\u2028\"}": false, "{\"a\":\"\u2029\"}": false,
		"{\"a\": [\"\\\" &\"]}": false,
	} {
		if _, got := inspect([]byte(data)); got != want {
			t.Errorf("inspect(%s) plain = %v, want %v", data, got, want)
		}
	}
}

// FuzzCanonicalDataIsWhatEncodingJSONWrites checks CanonicalData against
// json.Marshal of a json.RawMessage, which it stands in for.
func FuzzCanonicalDataIsWhatEncodingJSONWrites(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"a":"<b> & c"}`, " {\n \"a\" : [1, 2] }", `{"s":"line` + "\u2028" + `sep` + "\u2029" + `"}`,
		`{"e":"\u2028 \" \\"}`, `{"x":"` + "\u2027\u202a\u20ac" + `"}`, `[1, "a & b", {"c": null}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return // CanonicalData's input is valid JSON
		}
		want, err := json.Marshal(json.RawMessage(data))
		if err != nil {
			t.Skip(err)
		}
		got, err := CanonicalData(data)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("CanonicalData(%q) = %q, %v; want %q", data, got, err, want)
		}
	})
}
