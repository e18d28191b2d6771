package store

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// The embedded store trims the delivery log itself, a slice at a time,
// before the stream's own byte limit is reached. At that limit JetStream
// removes the oldest message for every message stored, one by one: each
// removal reads the first block of the stream and allocates, and a
// 30-minute soak at 1,000 events/s saw the manager's Go heap between
// collections rise by about a third once the log reached its cap (RSS
// 183 MiB before, up to 227 after). A purge below a sequence drops whole
// blocks at once instead. The stream keeps its MaxBytes as the bound
// that holds should trimming fall behind. With an external NATS the
// stream's limit applies as it is (the removals cost the NATS servers,
// and several replicas would trim at once).
const (
	// logTrimAt is the share of the log's cap from which it is trimmed...
	logTrimAt = 0.95
	// ...down to logTrimTo of it.
	logTrimTo = 0.85
)

// trimDeliveryLog purges the oldest records of the delivery log when it
// holds logTrimAt of its cap or more, down to about logTrimTo of it. It
// returns the number of records purged.
func (s *Store) trimDeliveryLog(ctx context.Context) (uint64, error) {
	if s.srv == nil || !s.DeliveryLog() {
		return 0, nil
	}
	stream, err := s.js.Stream(ctx, StreamDeliveryLog)
	if err != nil {
		return 0, err
	}
	st := stream.CachedInfo().State
	limit := float64(s.deliveryLogMaxBytes())
	if st.Msgs == 0 || float64(st.Bytes) < logTrimAt*limit {
		return 0, nil
	}
	perMsg := float64(st.Bytes) / float64(st.Msgs)
	n := uint64((float64(st.Bytes) - logTrimTo*limit) / perMsg)
	if n == 0 {
		return 0, nil
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(st.FirstSeq+n)); err != nil {
		return 0, fmt.Errorf("trimming the delivery log: %w", err)
	}
	return n, nil
}
