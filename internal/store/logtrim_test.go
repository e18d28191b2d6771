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
// stream's own limit: from 95% of the cap it purges the oldest records
// down to about 85%, keeping the newest, and below 95% it purges nothing.
func TestTheDeliveryLogIsTrimmedBeforeItsCap(t *testing.T) {
	ctx := context.Background()
	const limit = 2 << 20
	s, err := Open(ctx, Options{DataDir: t.TempDir(), MaxBytes: -1, DeliveryLogRetention: time.Hour, DeliveryLogMaxBytes: limit})
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
	body := bytes.Repeat([]byte("x"), 4000)
	publish := func(i int) {
		t.Helper()
		if _, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: DeliveryLogSubject("shop", "crm"), Header: nats.Header{HdrLogEvent: []string{fmt.Sprintf("evt-%d", i)}}, Data: body}); err != nil {
			t.Fatal(err)
		}
	}
	i := 0
	for ; ; i++ {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if float64(info.State.Bytes) >= 0.96*limit {
			break
		}
		if float64(info.State.Bytes) < 0.94*limit {
			if n, err := s.trimDeliveryLog(ctx); err != nil || n != 0 {
				t.Fatalf("at %d of %d bytes: trimmed %d (%v), want nothing", info.State.Bytes, limit, n, err)
			}
		}
		publish(i)
	}
	last := i - 1
	n, err := s.trimDeliveryLog(ctx)
	if err != nil || n == 0 {
		t.Fatalf("at 96%% of the cap: trimmed %d (%v)", n, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if share := float64(info.State.Bytes) / limit; share < 0.83 || share > 0.87 {
		t.Errorf("after trimming the log holds %.2f of its cap, want about 0.85", share)
	}
	if info.State.FirstSeq != n+1 || info.State.LastSeq != uint64(last+1) || info.State.Msgs != uint64(last+1)-n {
		t.Errorf("after trimming %d: sequences %d-%d, %d messages", n, info.State.FirstSeq, info.State.LastSeq, info.State.Msgs)
	}
	if m, err := stream.GetLastMsgForSubject(ctx, DeliveryLogSubject("shop", "crm")); err != nil || m.Header.Get(HdrLogEvent) != fmt.Sprintf("evt-%d", last) {
		t.Errorf("the newest record after trimming: %v, %v", m, err)
	}
}
