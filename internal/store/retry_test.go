package store

import (
	"bytes"
	"testing"
)

func TestRetryEncodingRoundTrips(t *testing.T) {
	d := Delivery{EventID: "msg_1", EventType: "message.sent", AcceptedAt: "2026-12-07T03:00:00.123456789Z", Attempt: 3, Body: []byte(`{"type":"message.sent","data":{"a":"ü\u2028"}}`)}
	ns, name, uid, got, err := DecodeRetry(EncodeRetry("shop", "crm.v2", "uid-1", &d))
	if err != nil {
		t.Fatal(err)
	}
	if ns != "shop" || name != "crm.v2" || uid != "uid-1" || got.EventID != d.EventID || got.EventType != d.EventType ||
		got.AcceptedAt != d.AcceptedAt || got.Attempt != 3 || !bytes.Equal(got.Body, d.Body) {
		t.Fatalf("decoded %s/%s %s %+v", ns, name, uid, got)
	}
	for _, bad := range [][]byte{nil, {5, 'a'}, EncodeRetry("a", "b", "c", &d)[:12]} {
		if _, _, _, _, err := DecodeRetry(bad); err == nil {
			t.Errorf("decodeRetry(%q) accepted a truncated entry", bad)
		}
	}
}
