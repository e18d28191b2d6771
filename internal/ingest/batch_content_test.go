package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestEveryBatchLineKeepsItsOwnData posts NDJSON batches whose every line's
// data differs (in length, kind and content) and checks that each enqueued
// event's envelope carries exactly its own line's type, data and
// timestamp. The line reader once reused one buffer for every line, so
// every event's data pointed at whatever the next lines wrote there.
func TestEveryBatchLineKeepsItsOwnData(t *testing.T) {
	for _, n := range []int{1, 2, 100, 1000} {
		for _, withID := range []bool{true, false} {
			t.Run(fmt.Sprintf("%d lines, ids %v", n, withID), func(t *testing.T) {
				ts := newTestServer(t, func(o *Options) { o.MaxEventBytes = 16 << 10 })
				posted := testutil.VariedEvents(fmt.Sprintf("b%d", n), n)
				w := ts.do(t, request{contentType: "application/x-ndjson", body: string(testutil.NDJSON(posted, withID))})
				if w.Code != http.StatusAccepted {
					t.Fatalf("status = %d; body %.500s", w.Code, w.Body)
				}
				calls := ts.enq.enqueued()
				if len(calls) != 1 || len(calls[0]) != n {
					t.Fatalf("got %d Enqueue calls, want one with %d events", len(calls), n)
				}
				ledger := testutil.NewLedger()
				ids, err := ledger.Accepted(withoutIDs(posted, withID), w.Body.Bytes())
				if err != nil {
					t.Fatal(err)
				}
				checkEnqueued(t, ledger, ids, calls[0])
			})
		}
	}
}

// TestSingleEventsKeepTheirOwnData is the same check for one event a
// request, many requests in a row.
func TestSingleEventsKeepTheirOwnData(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxEventBytes = 16 << 10 })
	posted := testutil.VariedEvents("single", 60)
	ledger := testutil.NewLedger()
	var ids []string
	for i, p := range posted {
		w := ts.do(t, request{contentType: "application/json", body: string(p.JSON(i%2 == 0))})
		if w.Code != http.StatusAccepted {
			t.Fatalf("event %d: status = %d; body %.500s", i, w.Code, w.Body)
		}
		got, err := ledger.Accepted(withoutIDs([]testutil.Posted{p}, i%2 == 0), w.Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	var events []delivery.Event
	for _, call := range ts.enq.enqueued() {
		events = append(events, call...)
	}
	checkEnqueued(t, ledger, ids, events)
}

// withoutIDs returns posted with the ids cleared when they were not sent.
func withoutIDs(posted []testutil.Posted, withID bool) []testutil.Posted {
	if withID {
		return posted
	}
	out := make([]testutil.Posted, len(posted))
	for i, p := range posted {
		p.ID = ""
		out[i] = p
	}
	return out
}

// checkEnqueued compares each enqueued event's envelope, the body a
// receiver gets, with what was posted under its id.
func checkEnqueued(t *testing.T, ledger *testutil.Ledger, ids []string, events []delivery.Event) {
	t.Helper()
	if len(ids) != len(events) {
		t.Fatalf("%d ids answered, %d events enqueued", len(ids), len(events))
	}
	bad := 0
	for i, ev := range events {
		if ev.ID != ids[i] {
			t.Fatalf("event %d enqueued as %s, answered as %s", i, ev.ID, ids[i])
		}
		want, _ := ledger.Get(ev.ID)
		body, err := ev.Envelope()
		if err != nil {
			t.Fatal(err)
		}
		if err := testutil.CheckBody(want, body); err != nil {
			if bad++; bad <= 5 {
				t.Errorf("event %d: %v", i, err)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d events do not carry what was posted", bad, len(events))
	}
}

// FuzzBatchLinesKeepTheirData posts multi-line NDJSON bodies: whatever the
// handler accepts, each enqueued event's data equals what encoding/json
// decodes from its own line (as encoding/json writes it), and its type and
// id are its line's.
func FuzzBatchLinesKeepTheirData(f *testing.F) {
	posted := testutil.VariedEvents("fz", 14)
	f.Add(testutil.NDJSON(posted, true))
	f.Add(testutil.NDJSON(posted[:2], false))
	f.Add([]byte(sentEvent(1) + "\r\n\r\n" + sentEvent(2)))
	f.Add([]byte(`{"type":"campaign.started","data":{"campaignId":"c","name":"n","total":3}}` + "\n" +
		`{"id":"1234567890","type":"message.sent","data":{"messageId":"m","sessionId":"s","to":"+6281234567890"}}` + "\n"))
	f.Add([]byte("\n \n" + validEvent + "\n" + validEvent))
	f.Add([]byte(`{"type":"message.sent","data":{"messageId":"a\u00e9\"","sessionId":"s","to":"+6281234567890","n":[1,2.0,{"x":null}]}}` + "\n" + validEvent))
	f.Fuzz(func(t *testing.T, body []byte) {
		ts := newTestServer(t)
		w := ts.do(t, request{contentType: "application/x-ndjson", body: string(body)})
		if w.Code != http.StatusAccepted {
			return
		}
		calls := ts.enq.enqueued()
		if len(calls) != 1 {
			t.Fatalf("%d Enqueue calls for an accepted batch", len(calls))
		}
		var lines [][]byte
		for _, l := range bytes.Split(body, []byte("\n")) {
			l = bytes.TrimSuffix(l, []byte("\r"))
			if len(bytes.TrimSpace(l)) > 0 {
				lines = append(lines, l)
			}
		}
		events := calls[0]
		if len(events) != len(lines) {
			t.Fatalf("%d events enqueued from %d lines", len(events), len(lines))
		}
		for i, ev := range events {
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(lines[i], &fields); err != nil {
				t.Fatalf("line %d was accepted but encoding/json refuses it: %v", i+1, err)
			}
			want, _ := json.Marshal(fields["data"])
			if !bytes.Equal(ev.Data, want) {
				t.Fatalf("line %d: data %s, the line's data is %s", i+1, ev.Data, want)
			}
			var typ string
			_ = json.Unmarshal(fields["type"], &typ)
			if ev.Type != typ {
				t.Fatalf("line %d: type %q, the line's is %q", i+1, ev.Type, typ)
			}
			var id string
			if fields["id"] != nil && json.Unmarshal(fields["id"], &id) == nil && id != "" && ev.ID != id {
				t.Fatalf("line %d: id %q, the line's is %q", i+1, ev.ID, id)
			}
			if strings.Contains(string(ev.Data), "\n") {
				t.Fatalf("line %d: data holds a newline: %q", i+1, ev.Data)
			}
		}
	})
}
