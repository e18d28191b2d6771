package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestDeliveryLogSubjects: one subject a delivery, its event id escaped
// into one token (no wildcard or separator survives), parsed back into the
// endpoint; records of two events in one write become two messages, each
// with its records in order.
func TestDeliveryLogSubjects(t *testing.T) {
	if got := DeliveryLogSubject("shop", "a.b", "Order.1*>x y"); got != "wh.lg.shop.a_b._4frder_2e1_2a_3ex_20y" {
		t.Errorf("subject %s", got)
	}
	if got := DeliveryLogFilter("shop", "", ""); got != "wh.lg.shop.*.*" {
		t.Errorf("namespace filter %s", got)
	}
	if got := DeliveryLogFilter("shop", "crm", "e1"); got != "wh.lg.shop.crm.e1" {
		t.Errorf("event filter %s", got)
	}
	key, ok := EndpointOfLogSubject(DeliveryLogSubject("shop", "a.b", "e"))
	if !ok || key.Namespace != "shop" || key.Name != "a.b" {
		t.Errorf("EndpointOfLogSubject: %v %v", key, ok)
	}
	if _, ok := EndpointOfLogSubject("wh.lg.shop.crm"); ok {
		t.Error("a subject of the first format parsed")
	}
	rs := []LogRecord{{Kind: LogStored, EventID: "e1"}, {Kind: LogStored, EventID: "e2"}, {Kind: LogAttempt, EventID: "e1", Attempt: 1}}
	msgs := DeliveryLogMsgs("shop", "crm", rs)
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	for i, want := range []struct {
		subject string
		kinds   string
	}{{"wh.lg.shop.crm.e1", "[Stored Attempt]"}, {"wh.lg.shop.crm.e2", "[Stored]"}} {
		got, err := DecodeLogRecords(msgs[i].Data)
		var kinds []string
		for _, r := range got {
			kinds = append(kinds, r.Kind)
		}
		if err != nil || msgs[i].Subject != want.subject || fmt.Sprint(kinds) != want.kinds {
			t.Errorf("message %d: %s %v %v, want %s %s", i, msgs[i].Subject, kinds, err, want.subject, want.kinds)
		}
	}
}

// TestOpenDropsTheFirstLogFormatOnce: a delivery log of the first format
// (one subject an endpoint) loses those records at the next start, once;
// records of the present format stay.
func TestOpenDropsTheFirstLogFormatOnce(t *testing.T) {
	dir := t.TempDir()
	opts := Options{DataDir: dir, MaxBytes: -1, DeliveryLogRetention: time.Hour}
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// As the first format's build left it: no format in the metadata, and
	// a message on an endpoint's subject.
	info, err := s.js.Stream(ctx, StreamDeliveryLog)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	cfg.Metadata = nil
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"wh.lg.shop.crm", DeliveryLogSubject("shop", "crm", "kept")} {
		if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: []byte(`[]`)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s, err = Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := s.js.Stream(ctx, StreamDeliveryLog)
	if err != nil {
		t.Fatal(err)
	}
	st, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State.Msgs != 1 || st.Config.Metadata[deliveryLogFormatKey] != deliveryLogFormat {
		t.Fatalf("after the start: %d messages, metadata %v; want the present format's 1", st.State.Msgs, st.Config.Metadata)
	}
	if _, err := stream.GetLastMsgForSubject(ctx, DeliveryLogSubject("shop", "crm", "kept")); err != nil {
		t.Errorf("the present format's record: %v", err)
	}
	// Written now on a first-format subject (an old replica still running):
	// not dropped again at the next start, the format being recorded.
	if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: "wh.lg.shop.crm", Data: []byte(`[]`)}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stream, _ = s.js.Stream(ctx, StreamDeliveryLog)
	if n := stream.CachedInfo().State.Msgs; n != 2 {
		t.Errorf("after a second start: %d messages, want 2", n)
	}
}

// TestDeliveryLogKeepsAtMostMaxRecords: the log's record cap drops the
// oldest records (each delivery's subject is an index entry in memory, so
// the count bounds the log's memory), and the default and "no cap" reach
// the stream's configuration.
func TestDeliveryLogKeepsAtMostMaxRecords(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		records, want int64
	}{{0, DefaultDeliveryLogMaxRecords}, {-1, -1}, {10, 10}} {
		s, err := Open(ctx, Options{DataDir: t.TempDir(), MaxBytes: -1, DeliveryLogRetention: time.Hour, DeliveryLogMaxRecords: tc.records})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := s.js.Stream(ctx, StreamDeliveryLog)
		if err != nil {
			t.Fatal(err)
		}
		if got := stream.CachedInfo().Config.MaxMsgs; got != tc.want {
			t.Errorf("DeliveryLogMaxRecords %d: the stream's MaxMsgs is %d, want %d", tc.records, got, tc.want)
		}
		if tc.records == 10 {
			for i := range 25 {
				if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: DeliveryLogSubject("shop", "crm", fmt.Sprintf("evt-%02d", i)), Data: []byte(`[]`)}); err != nil {
					t.Fatal(err)
				}
			}
			info, err := stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != 10 || info.State.FirstSeq != 16 {
				t.Errorf("after 25 records with a cap of 10: %d kept from sequence %d, want 10 from 16", info.State.Msgs, info.State.FirstSeq)
			}
			if _, err := stream.GetLastMsgForSubject(ctx, DeliveryLogSubject("shop", "crm", "evt-24")); err != nil {
				t.Errorf("the newest record: %v", err)
			}
			if _, err := stream.GetLastMsgForSubject(ctx, DeliveryLogSubject("shop", "crm", "evt-00")); err == nil {
				t.Error("the oldest record is still kept")
			}
		}
		s.Close()
	}
}
