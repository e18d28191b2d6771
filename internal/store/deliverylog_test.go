package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestDeliveryLogSubjects: one subject an endpoint, parsed back into the
// endpoint; records of two events in one write become two messages, each
// with its records in order and its event named, escaped (no wildcard or
// separator survives), in a header.
func TestDeliveryLogSubjects(t *testing.T) {
	if got := DeliveryLogSubject("shop", "a.b"); got != "wh.lg.shop.a_b" {
		t.Errorf("subject %s", got)
	}
	if got := DeliveryLogFilter("shop", ""); got != "wh.lg.shop.*" {
		t.Errorf("namespace filter %s", got)
	}
	if got := DeliveryLogFilter("shop", "crm"); got != "wh.lg.shop.crm" {
		t.Errorf("endpoint filter %s", got)
	}
	key, ok := EndpointOfLogSubject(DeliveryLogSubject("shop", "a.b"))
	if !ok || key.Namespace != "shop" || key.Name != "a.b" {
		t.Errorf("EndpointOfLogSubject: %v %v", key, ok)
	}
	if _, ok := EndpointOfLogSubject("wh.lg.shop.crm.e1"); ok {
		t.Error("a subject of the second format (a subject a delivery) parsed")
	}
	rs := []LogRecord{{Kind: LogStored, EventID: "Order.1*>x y"}, {Kind: LogStored, EventID: "e2"}, {Kind: LogAttempt, EventID: "Order.1*>x y", Attempt: 1}}
	msgs, err := DeliveryLogMsgs("shop", "crm", rs)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	for i, want := range []struct {
		event string
		kinds string
	}{{"_4frder_2e1_2a_3ex_20y", "[Stored Attempt]"}, {"e2", "[Stored]"}} {
		got, err := DecodeLogRecords(msgs[i].Data)
		var kinds []string
		for _, r := range got {
			kinds = append(kinds, r.Kind)
		}
		id, starts := LogEventOf(msgs[i].Header)
		if err != nil || msgs[i].Subject != "wh.lg.shop.crm" || id != want.event || !starts || fmt.Sprint(kinds) != want.kinds {
			t.Errorf("message %d: %s %s (starts %v) %v %v, want wh.lg.shop.crm %s (starts) %s", i, msgs[i].Subject, id, starts, kinds, err, want.event, want.kinds)
		}
	}
	// Only the Stored record of an accepted event starts a delivery.
	for _, r := range []LogRecord{{Kind: LogAttempt, EventID: "e1"}, {Kind: LogStored, EventID: "e1", Origin: "Resend"}} {
		msgs, err := DeliveryLogMsgs("shop", "crm", []LogRecord{r})
		if err != nil {
			t.Fatal(err)
		}
		if id, starts := LogEventOf(msgs[0].Header); id != "e1" || starts {
			t.Errorf("%s %q: event %q, starts %v; want e1, not starting", r.Kind, r.Origin, id, starts)
		}
	}
}

// TestOpenDropsEarlierLogFormatsOnce: a delivery log of an earlier format
// (the first: a subject an endpoint, several deliveries a message; the
// second: a subject a delivery) loses its records at the next start, once,
// and its sequences go on; records of the present format stay.
func TestOpenDropsEarlierLogFormatsOnce(t *testing.T) {
	for _, format := range []string{"", "2"} {
		t.Run("format "+format, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{DataDir: dir, MaxBytes: -1, DeliveryLogRetention: time.Hour}
			s, err := Open(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			// As the earlier format's build left it.
			info, err := s.js.Stream(ctx, StreamDeliveryLog)
			if err != nil {
				t.Fatal(err)
			}
			cfg := info.CachedInfo().Config
			cfg.Metadata = nil
			if format != "" {
				cfg.Metadata = map[string]string{deliveryLogFormatKey: format}
			}
			if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			for _, subj := range []string{"wh.lg.shop.crm", "wh.lg.shop.crm.e1"} {
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
			st := stream.CachedInfo()
			if st.State.Msgs != 0 || st.State.LastSeq != 2 || st.Config.Metadata[deliveryLogFormatKey] != deliveryLogFormat {
				t.Fatalf("after the start: %d messages up to %d, metadata %v; want none, the sequences kept, the present format", st.State.Msgs, st.State.LastSeq, st.Config.Metadata)
			}
			// Written now in the present format: kept at the next start.
			msgs, err := DeliveryLogMsgs("shop", "crm", []LogRecord{{Kind: LogStored, EventID: "kept"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.js.PublishMsg(ctx, msgs[0]); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s, err = Open(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			stream, _ = s.js.Stream(ctx, StreamDeliveryLog)
			if n := stream.CachedInfo().State.Msgs; n != 1 {
				t.Errorf("after a second start: %d messages, want 1", n)
			}
		})
	}
}

// TestDeliveryLogKeepsAtMostMaxRecords: the log's record cap drops the
// oldest records, and the default (none) and "no cap" reach the stream's
// configuration.
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
				if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: DeliveryLogSubject("shop", "crm"), Header: nats.Header{HdrLogEvent: []string{fmt.Sprintf("evt-%02d", i)}}, Data: []byte(`[]`)}); err != nil {
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
			if m, err := stream.GetLastMsgForSubject(ctx, DeliveryLogSubject("shop", "crm")); err != nil || m.Header.Get(HdrLogEvent) != "evt-24" {
				t.Errorf("the newest record: %v, %v", m, err)
			}
		}
		s.Close()
	}
}

// TestCountOnDiskAddsToTheUsage: what another user of the data directory
// reports (the delivery log's index) counts toward the store's usage, and
// so toward its bound, from the next reading on.
func TestCountOnDiskAddsToTheUsage(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{DataDir: t.TempDir(), MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.checkCapacity(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Usage()
	s.CountOnDisk(func() int64 { return 950 << 20 })
	if err := s.checkCapacity(ctx); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Usage(); after < before+950<<20 {
		t.Errorf("usage %d after counting 950 MiB more, was %d", after, before)
	}
	if err := s.Writable(); err == nil {
		t.Error("950 MiB counted of a 1 GiB bound: the store still takes events")
	}
}
