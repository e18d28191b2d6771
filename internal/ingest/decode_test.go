package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/delivery"
)

// FuzzDecodeEvent checks that the decoder never panics and returns either a
// valid event or a 400/422 error with a code and a message. The seed corpus
// runs as a normal test under go test.
func FuzzDecodeEvent(f *testing.F) {
	for _, t := range catalog.Types() {
		f.Add([]byte(`{"type":"` + t.Name + `","data":` + string(t.Example) + `}`))
	}
	for _, seed := range []string{
		validEvent,
		"{\"type\":\"message.sent\",\"data\":{ \"messageId\" : \"m <1> & \\\" \\\\\",\n\"sessionId\":\"s\",\"to\":\"+6281234567890\"}}",
		`{"id":"order-17","type":"message.sent","timestamp":"2026-11-28T10:15:02.123Z","data":` + validData + `}`,
		`{"id":null,"timestamp":null,"type":"message.sent","data":` + validData + `}`,
		`{"id":"","type":"message.sent","data":{}}`,
		`{"id":"a b","type":"message.sent","data":{}}`,
		`{"id":1,"type":"message.sent","data":{}}`,
		`{"type":"message.sent","timestamp":"yesterday","data":{}}`,
		`{"type":"message.sent","timestamp":"2026-13-45T99:99:99Z","data":{}}`,
		`{"type":"message.sent","data":[]}`,
		`{"type":"message.sent","data":null}`,
		`{"type":"message.sent","data":"{}"}`,
		`{"type":"message.sent"}`,
		`{"data":{}}`,
		`{"type":null,"data":{}}`,
		`{"type":"","data":{}}`,
		`{"type":["message.sent"],"data":{}}`,
		`{"type":"nope","data":{}}`,
		`{"type":"webhook.test","data":{"message":"m","webhookConfig":"w"}}`,
		`{"type":"message.sent","data":{},"extra":true}`,
		`{"type":"message.sent","data":{"messageId":"m","sessionId":"s","to":"+6281234567890"}} trailing`,
		`{"type":"message.sent","type":"message.failed","data":` + validData + `}`,
		`{"type":"message.failed","data":{"messageId":"m","sessionId":"s","to":"+6281234567890","error":{"code":1}}}`,
		`{"type":"campaign.completed","data":{"campaignId":"c","name":"n","total":1e400,"sent":0,"delivered":0,"failed":0}}`,
		`{"type":"message.sent","data":{"messageId":"\ud800","sessionId":"s","to":"+6281234567890"}}`,
		"{\"type\":\"message.sent\",\"data\":{\"x\":\"\xff\"}}",
		`{`, `}`, `[]`, `null`, `true`, `"s"`, `0`, ``, ` `, "\x00",
	} {
		f.Add([]byte(seed))
	}
	d := decoder{now: func() time.Time { return testNow }, newID: NewEventID}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, apiErr := d.decode(body)
		if apiErr != nil {
			if apiErr.status != http.StatusBadRequest && apiErr.status != http.StatusUnprocessableEntity {
				t.Fatalf("status %d for %q", apiErr.status, body)
			}
			if apiErr.code == "" || apiErr.message == "" || !utf8.ValidString(apiErr.message) {
				t.Fatalf("error without a code or a UTF-8 message: %+v", apiErr)
			}
			return
		}
		typ, ok := catalog.Lookup(ev.Type)
		if !ok || typ.Reserved {
			t.Fatalf("accepted type %q", ev.Type)
		}
		if err := validateID(ev.ID); err != nil {
			t.Fatalf("accepted id %q: %v", ev.ID, err)
		}
		if ev.Timestamp.IsZero() {
			t.Fatal("zero timestamp")
		}
		if err := typ.Validate(ev.Data); err != nil {
			t.Fatalf("accepted data that does not validate: %v", err)
		}
		var data map[string]any
		if err := json.Unmarshal(ev.Data, &data); err != nil || data == nil {
			t.Fatalf("accepted data that is not an object: %s", ev.Data)
		}
		if _, err := ev.Envelope(); err != nil {
			t.Fatalf("the envelope cannot be built: %v", err)
		}
		// The data delivered is the data posted as encoding/json writes it.
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(body, &fields)
		if want, _ := json.Marshal(fields["data"]); !ev.DataCanonical || !bytes.Equal(ev.Data, want) {
			t.Fatalf("data %s became %s (canonical %v), want %s", fields["data"], ev.Data, ev.DataCanonical, want)
		}
	})
}

func TestLineReader(t *testing.T) {
	type line struct {
		text     string
		oversize bool
	}
	tests := map[string]struct {
		in   string
		want []line
	}{
		"lines end with LF or CRLF": {
			in:   "a\nbb\r\nccc",
			want: []line{{"a", false}, {"bb", false}, {"ccc", false}},
		},
		"blank lines are lines": {
			in:   "\n\na\n",
			want: []line{{"", false}, {"", false}, {"a", false}},
		},
		"a line at the limit is kept": {
			in:   "12345\n123456\n1",
			want: []line{{"12345", false}, {"", true}, {"1", false}},
		},
		"an unterminated oversize line is reported": {
			in:   "123456789",
			want: []line{{"", true}},
		},
		"an empty body has no lines": {
			in: "",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := newLineReader(stringsReader(tc.in), 5)
			var got []line
			for {
				l, oversize, err := r.next()
				if err != nil {
					break
				}
				got = append(got, line{string(l), oversize})
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %+v, want %+v", got, tc.want)
				}
			}
		})
	}
}

// stringsReader returns a reader that yields s in small chunks, so lines
// cross buffer boundaries.
func stringsReader(s string) *chunkReader { return &chunkReader{s: s} }

type chunkReader struct{ s string }

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), 3)], r.s)
	r.s = r.s[n:]
	return n, nil
}

// BenchmarkDecodeEvent is the ingestion API's per-event parsing and schema
// validation of a typical event.
func BenchmarkDecodeEvent(b *testing.B) {
	d := decoder{now: func() time.Time { return testNow }, newID: NewEventID}
	body := []byte(`{"type":"message.sent","timestamp":"2026-11-28T10:15:02.123Z","data":{"messageId":"wamid.HBgLNjI4MTIzNDU2Nzg5FQIAERgSMEQ1RjM2","sessionId":"session-01","to":"+6281234567890","campaignId":"cmp_2026_11_black_friday","text":"Hello Budi, your order #1234 has shipped & will arrive tomorrow."}}`)
	if _, err := d.decode(body); err != nil {
		b.Fatal(err.message)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(body); err != nil {
			b.Fatal(err.message)
		}
	}
}

// The 202 body of one event is what encoding/json writes for it.
func TestAcceptedBodyIsWhatEncodingJSONWrites(t *testing.T) {
	for _, r := range []delivery.EnqueueResult{
		{ID: "msg_2Yc7sWJQm3pLxNvRt8KdE4fHgAb", Subscribers: 3},
		{ID: "order-17:a.b_c", Subscribers: 0, Duplicate: true},
		{ID: "with space <&>", Subscribers: 12},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := acceptedBody(r)
		if wantOK := validateID(r.ID) == nil; ok != wantOK {
			t.Errorf("%+v: built without reflection %t, want %t", r, ok, wantOK)
		}
		if ok && !bytes.Equal(got, want) {
			t.Errorf("%+v: got %s, want %s", r, got, want)
		}
	}
}

// optionalString's shortcut for strings without escapes gives what
// json.Unmarshal gives.
func TestOptionalStringAgreesWithEncodingJSON(t *testing.T) {
	for _, raw := range []string{`"message.sent"`, `""`, `"é 日本"`, `"a\"b"`, `"\u00e9"`, `"a\\b"`, `"tab\t"`} {
		got, present, err := optionalString(json.RawMessage(raw))
		var want string
		wantErr := json.Unmarshal([]byte(raw), &want)
		if (err != nil) != (wantErr != nil) || (err == nil && (!present || got != want)) {
			t.Errorf("%s: got %q (present %v, %v), json.Unmarshal %q (%v)", raw, got, present, err, want, wantErr)
		}
	}
}

func TestParseContentType(t *testing.T) {
	for header, want := range map[string]string{
		"application/json": mediaTypeJSON, "application/json; charset=utf-8": mediaTypeJSON, "Application/JSON": mediaTypeJSON,
		"application/x-ndjson": mediaTypeNDJSON, "application/ndjson": mediaTypeNDJSON, "application/x-ndjson; charset=UTF-8": mediaTypeNDJSON,
		"": "", "text/plain": "", "application/json; charset=latin1": "", "application/json;;": "",
	} {
		got, err := parseContentType(header)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q, %v; want %q", header, got, err, want)
		}
	}
}

func TestIsDNS1123LabelAgreesWithApimachinery(t *testing.T) {
	for _, s := range []string{
		"", "a", "0", "-", "a-", "-a", "a-b", "shop", "team-42", "Shop", "shop_1", "shop.eu", "ä",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "a b", "a\x00", "9z",
	} {
		want := len(validation.IsDNS1123Label(s)) == 0
		if got := isDNS1123Label(s); got != want {
			t.Errorf("isDNS1123Label(%q) = %v, apimachinery says %v", s, got, want)
		}
	}
}

// readAll reads the whole body whatever the announced length.
func TestReadAllWithAContentLength(t *testing.T) {
	body := strings.Repeat("x", 1000)
	for _, announced := range []int64{-1, 0, 1, 999, 1000, 1001, 5000} {
		got, err := readAll(iotest.OneByteReader(strings.NewReader(body)), announced)
		if err != nil || string(got) != body {
			t.Errorf("announced %d: read %d bytes, %v", announced, len(got), err)
		}
	}
	if _, err := readAll(iotest.ErrReader(errors.New("boom")), 10); err == nil || err.Error() != "boom" {
		t.Errorf("a failing reader gave %v", err)
	}
}
