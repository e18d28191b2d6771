package store

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// The embedded store trims the delivery log itself, a slice at a time,
// before the stream's own limits (--delivery-log-max-bytes,
// --delivery-log-max-records) are reached. At a limit JetStream removes
// the oldest message for every message stored, one at a time, and with
// one subject a delivery each removal also updates the subject index:
// make bench's pass 9 saw the log-on manager's CPU an event rise from
// about 230 to about 300 µs over its rounds as its log reached the record
// cap, while the log-off manager's stayed at about 186. A purge below a
// sequence drops whole blocks at once instead. The stream keeps its limits
// as the bound that holds should trimming fall behind. With an external
// NATS the stream's limits apply as they are (the removals cost the NATS
// servers, and several replicas would trim at once).
const (
	// logTrimAt is the share of a cap from which the log is trimmed...
	logTrimAt = 0.90
	// ...down to logTrimTo of it.
	logTrimTo = 0.75
)

// trimDeliveryLog purges the oldest records of the delivery log when it
// holds logTrimAt of its byte or record cap or more, down to about
// logTrimTo of it. It returns the number of records purged.
func (s *Store) trimDeliveryLog(ctx context.Context) (uint64, error) {
	if s.srv == nil || !s.DeliveryLog() {
		return 0, nil
	}
	stream, err := s.js.Stream(ctx, StreamDeliveryLog)
	if err != nil {
		return 0, err
	}
	st := stream.CachedInfo().State
	if st.Msgs == 0 {
		return 0, nil
	}
	var n uint64
	if limit := float64(s.deliveryLogMaxBytes()); float64(st.Bytes) >= logTrimAt*limit {
		perMsg := float64(st.Bytes) / float64(st.Msgs)
		n = uint64((float64(st.Bytes) - logTrimTo*limit) / perMsg)
	}
	if limit := s.deliveryLogMaxRecords(); limit > 0 && float64(st.Msgs) >= logTrimAt*float64(limit) {
		n = max(n, st.Msgs-uint64(logTrimTo*float64(limit)))
	}
	if n == 0 {
		return 0, nil
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(st.FirstSeq+n)); err != nil {
		return 0, fmt.Errorf("trimming the delivery log: %w", err)
	}
	return n, nil
}
