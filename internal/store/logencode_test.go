package store

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

func sampleRecords(s string) []LogRecord {
	at := time.Date(2026, 12, 8, 1, 2, 3, 456789000, time.FixedZone("WIB", 7*3600))
	return []LogRecord{
		StoredRecord(types.UID("uid-"+s), &Delivery{EventID: "msg_" + s, EventType: "message.sent", AcceptedAt: at.UTC().Format(time.RFC3339Nano),
			Body: []byte(`{"id":"msg_1","type":"message.sent","timestamp":"2026-12-08T01:02:03Z","data":{"text":"a \"quoted\" <b>&amp;</b> \u2028 ü"}}`)}, 1<<10, ""),
		StoredRecord("uid", &Delivery{EventID: "e2", EventType: s, Body: []byte(`{"big":true}`)}, 4, "Resend"),
		{Kind: LogAttempt, UID: "uid", EventID: s, EventType: "message.failed", Attempt: 3, Attempted: true, Time: at, DurationMS: 1234,
			Host: "crm.example.com:8443", StatusCode: 503, Result: webhooksv1alpha1.ResultRetrying, Error: "HTTP 503: " + s,
			ResponseHeaders: map[string]string{"Retry-After": "30", "X-Z": s, "Content-Type": "text/plain; charset=utf-8"},
			ResponseBody:    s + "\x00\x1f\t\n\r\\\"", NextAttempt: at.Add(time.Minute).UTC()},
		{Kind: LogAttempt, UID: "uid", EventID: "e3", Attempt: 1, Time: time.Unix(1_800_000_000, 0).UTC(), Result: webhooksv1alpha1.ResultFailed, Error: "gone"},
	}
}

func decodeBoth(t *testing.T, rs []LogRecord) (ours, std []LogRecord) {
	t.Helper()
	want, err := json.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	got := appendLogRecords(nil, rs)
	if !json.Valid(got) {
		t.Fatalf("not JSON: %s", got)
	}
	if err := json.Unmarshal(got, &ours); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &std); err != nil {
		t.Fatal(err)
	}
	// A body is the same JSON value in both, though encoding/json
	// escapes HTML in it and the log's encoder copies it as it is.
	for i := range ours {
		var a, b any
		if len(ours[i].Body) > 0 || len(std[i].Body) > 0 {
			if json.Unmarshal(ours[i].Body, &a) != nil || json.Unmarshal(std[i].Body, &b) != nil || !reflect.DeepEqual(a, b) {
				t.Errorf("record %d: body %s, encoding/json %s", i, ours[i].Body, std[i].Body)
			}
		}
		ours[i].Body, std[i].Body = nil, nil
	}
	return ours, std
}

// TestTheLogEncoderWritesWhatEncodingJSONWrites: the delivery log's own
// encoder and encoding/json give documents that decode to the same
// records, for strings with quotes, control characters, HTML, line
// separators and invalid UTF-8, times in other zones, headers, bodies
// kept and not.
func TestTheLogEncoderWritesWhatEncodingJSONWrites(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uo\te`, "ctl\x01\x7f", "<script>&</script>", "line\u2028sep\u2029", "bad\xff\xfeutf8\xc3", "emoji 🎉 ü ß"} {
		ours, std := decodeBoth(t, sampleRecords(s))
		if !reflect.DeepEqual(ours, std) {
			t.Errorf("%q:\nours %+v\nstd  %+v", s, ours, std)
		}
	}
}

func FuzzTheLogEncoderWritesWhatEncodingJSONWrites(f *testing.F) {
	f.Add("x", "y")
	f.Add("\xff", "\u2028")
	f.Fuzz(func(t *testing.T, a, b string) {
		rs := sampleRecords(a)
		rs[2].ResponseBody, rs[2].ResponseHeaders[b] = b, a
		ours, std := decodeBoth(t, rs)
		if !reflect.DeepEqual(ours, std) {
			t.Errorf("ours %+v\nstd  %+v", ours, std)
		}
	})
}

func BenchmarkLogEncoding(b *testing.B) {
	rs := sampleRecords("plain")[:1]
	rs = append(rs, LogRecord{Kind: LogAttempt, UID: "uid", EventID: "msg_1", Attempt: 1, Attempted: true, Time: time.Now(), DurationMS: 3, Host: "127.0.0.1:8080", StatusCode: 200, Result: webhooksv1alpha1.ResultSucceeded, ResponseHeaders: map[string]string{"Content-Length": "0", "Date": "Tue, 08 Dec 2026 01:02:03 GMT"}})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(rs)
		}
	})
	b.Run("appendLogRecords", func(b *testing.B) {
		for b.Loop() {
			_ = appendLogRecords(make([]byte, 0, 2048), rs)
		}
	})
}
