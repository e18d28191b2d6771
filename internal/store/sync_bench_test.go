package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkStoreSync measures what --store-sync=always costs against the
// default interval: 32 concurrent writers, as concurrent requests are,
// each storing a 1 KB delivery and waiting for JetStream's
// acknowledgement (what a 202 waits for). Run the two side by side:
//
//	go test -run '^$' -bench BenchmarkStoreSync -count 3 ./internal/store/
func BenchmarkStoreSync(b *testing.B) {
	for _, tc := range []struct {
		name string
		sync time.Duration
	}{{"interval-2m", 2 * time.Minute}, {"interval-1s", time.Second}, {"interval-100ms", 100 * time.Millisecond}, {"always", SyncAlways}} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := Open(context.Background(), Options{DataDir: b.TempDir(), Sync: tc.sync, MaxBytes: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			body := make([]byte, 1024)
			var n atomic.Int64
			b.SetParallelism(16) // 32 writers on 2 cores
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					msg := DeliveryMsg("shop", fmt.Sprintf("ep-%d", i%8), "uid", &Delivery{EventID: fmt.Sprint(i), EventType: "message.sent", AcceptedAt: "2026-12-07T10:00:00Z", Body: body})
					if _, err := s.JetStream().PublishMsg(context.Background(), msg, jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
