package store

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The embedded store trims the delivery log a slice at a time before the
// stream's own limits: from 90% of its byte cap, or of its record cap, it
// purges the oldest records down to about 75%, keeping the newest, and
// below 90% it purges nothing.
func TestTheDeliveryLogIsTrimmedBeforeItsCap(t *testing.T) {
	for _, c := range []struct {
		name  string
		opts  Options
		body  int
		share func(st streamState) float64
	}{
		{name: "bytes", opts: Options{DeliveryLogMaxBytes: 2 << 20, DeliveryLogMaxRecords: -1}, body: 4000,
			share: func(st streamState) float64 { return float64(st.bytes) / (2 << 20) }},
		{name: "records", opts: Options{DeliveryLogMaxRecords: 500}, body: 100,
			share: func(st streamState) float64 { return float64(st.msgs) / 500 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			o := c.opts
			o.DataDir, o.MaxBytes, o.DeliveryLogRetention = t.TempDir(), -1, time.Hour
			s, err := Open(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			close(s.stopCapacity) // this test trims by hand
			<-s.capacityDone
			s.stopCapacity = nil
			stream, err := s.js.Stream(ctx, StreamDeliveryLog)
			if err != nil {
				t.Fatal(err)
			}
			state := func() streamState {
				t.Helper()
				info, err := stream.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return streamState{bytes: info.State.Bytes, msgs: info.State.Msgs, first: info.State.FirstSeq, last: info.State.LastSeq}
			}
			body := bytes.Repeat([]byte("x"), c.body)
			i := 0
			for ; ; i++ {
				st := state()
				if c.share(st) >= 0.91 {
					break
				}
				if c.share(st) < 0.89 {
					if n, err := s.trimDeliveryLog(ctx); err != nil || n != 0 {
						t.Fatalf("at %.2f of the cap: trimmed %d (%v), want nothing", c.share(st), n, err)
					}
				}
				if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: DeliveryLogSubject("shop", "crm", fmt.Sprintf("evt-%d", i)), Data: body}); err != nil {
					t.Fatal(err)
				}
			}
			last := i - 1
			n, err := s.trimDeliveryLog(ctx)
			if err != nil || n == 0 {
				t.Fatalf("at 91%% of the cap: trimmed %d (%v)", n, err)
			}
			st := state()
			if share := c.share(st); share < 0.73 || share > 0.77 {
				t.Errorf("after trimming the log holds %.2f of its cap, want about 0.75", share)
			}
			if st.first != n+1 || st.last != uint64(last+1) || st.msgs != uint64(last+1)-n {
				t.Errorf("after trimming %d: sequences %d-%d, %d messages", n, st.first, st.last, st.msgs)
			}
			if _, err := stream.GetLastMsgForSubject(ctx, DeliveryLogSubject("shop", "crm", fmt.Sprintf("evt-%d", last))); err != nil {
				t.Errorf("the newest record after trimming: %v", err)
			}
			if _, err := stream.GetLastMsgForSubject(ctx, DeliveryLogSubject("shop", "crm", "evt-0")); err == nil {
				t.Errorf("the oldest record is still there after trimming")
			}
		})
	}
}

type streamState struct{ bytes, msgs, first, last uint64 }
