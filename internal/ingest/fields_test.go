package ingest

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzObjectFields checks objectFields against json.Unmarshal into a
// map[string]json.RawMessage, which it replaces: the same error or none, the
// same names, the same raw values.
func FuzzObjectFields(f *testing.F) {
	for _, seed := range []string{
		validEvent, `{}`, ` { } `, `null`, `[]`, `"s"`, `1`, ``, `{`, `{"a":1,}`, `{"a" 1}`,
		`{"type":"message.sent","data":{"x":[1,{"y":"}"}],"z":"\\\""}}`,
		`{"d\u0061ta":{},"data":[],"data":null}`,
		"{\n\t\"id\" :\r \"a\" , \"n\":-1.5e3 ,\"t\":true,\"f\":false,\"nil\":null}",
		`{"\ud83d\ude00":"😀","\ud800":"lone","":""}`,
		`{"a":"b\\"}`, `{"a":{"b":{"c":[[[]]]}}} `, `{"a":1} x`, `{"a":1}{}`,
		"{\"a\":\"\x01\"}", `{"a":01}`, `{"a":[1 2]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want map[string]json.RawMessage
		wantErr := json.Unmarshal(body, &want)
		got, err := objectFields(body)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%q: error %v, json.Unmarshal's %v", body, err, wantErr)
		}
		if err != nil {
			if err.Error() != wantErr.Error() {
				t.Fatalf("%q: error %q, json.Unmarshal's %q", body, err, wantErr)
			}
			return
		}
		if (got == nil) != (want == nil) || len(got) != len(want) {
			t.Fatalf("%q: got %q, want %q", body, got, want)
		}
		for name, raw := range want {
			if g, ok := got[name]; !ok || !bytes.Equal(g, raw) {
				t.Fatalf("%q: %q is %q, want %q", body, name, g, raw)
			}
		}
	})
}
