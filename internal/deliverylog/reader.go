package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/store"
)

// Reader reads the delivery log.
type Reader struct {
	js jetstream.JetStream
}

// NewReader returns a reader of the log in js.
func NewReader(js jetstream.JetStream) *Reader { return &Reader{js: js} }

// Filter returns the log subject filter of namespace ns, narrowed to one
// WebhookConfig when webhook is not empty.
func Filter(ns, webhook string) string {
	if webhook != "" {
		return store.DeliveryLogSubject(ns, webhook)
	}
	return store.SubjDeliveryLog + "." + ns + ".>"
}

// ErrExpired is returned for a resource version older than what the log
// still holds.
var ErrExpired = errors.New("the delivery log no longer holds that resource version")

// Bounds returns the log's first and last stream sequences.
func (r *Reader) Bounds(ctx context.Context) (first, last uint64, err error) {
	s, err := r.js.Stream(ctx, store.StreamDeliveryLog)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the delivery log: %w", err)
	}
	st := s.CachedInfo().State
	return st.FirstSeq, st.LastSeq, nil
}

// Scan folds every record of namespace ns (of one WebhookConfig when
// webhook is not empty) with a sequence up to upTo, and returns the
// deliveries, newest first (by their first record), and the folder for
// going on from upTo.
func (r *Reader) Scan(ctx context.Context, ns, webhook string, upTo uint64) ([]*Delivery, *Folder, error) {
	f := NewFolder(ns)
	if upTo > 0 {
		if err := r.read(ctx, Filter(ns, webhook), 1, upTo, f); err != nil {
			return nil, nil, err
		}
	}
	out := make([]*Delivery, 0, len(f.byKey))
	for _, d := range f.byKey {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *Delivery) int {
		switch {
		case b.Before(a.FirstSeq, a.FirstIndex):
			return -1
		case a.Before(b.FirstSeq, b.FirstIndex):
			return 1
		}
		return 0
	})
	return out, f, nil
}

// read folds the records of the subjects matching filter from sequence
// from up to upTo into f.
func (r *Reader) read(ctx context.Context, filter string, from, upTo uint64, f *Folder) error {
	cons, err := r.js.CreateConsumer(ctx, store.StreamDeliveryLog, jetstream.ConsumerConfig{
		Description:       "Reads the delivery log for the delivery.wablast.io API",
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       max(from, 1),
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return fmt.Errorf("reading the delivery log: %w", err)
	}
	defer func() {
		_ = r.js.DeleteConsumer(context.WithoutCancel(ctx), store.StreamDeliveryLog, cons.CachedInfo().Name)
	}()
	remaining := cons.CachedInfo().NumPending
	for remaining > 0 {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msgs, err := cons.Fetch(int(min(remaining, 1000)), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			return fmt.Errorf("reading the delivery log: %w", err)
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			remaining = meta.NumPending
			if meta.Sequence.Stream > upTo {
				remaining = 0
				continue
			}
			foldMsg(f, m.Subject(), meta.Sequence.Stream, m.Data(), nil)
		}
		cancel()
		if err := msgs.Error(); err != nil {
			return fmt.Errorf("reading the delivery log: %w", err)
		}
		if got == 0 {
			return fmt.Errorf("reading the delivery log: nothing within 10s, %d records left", remaining)
		}
	}
	return nil
}

// foldMsg folds one log message into f and calls touched (when not nil)
// for each delivery a record of it changed.
func foldMsg(f *Folder, subject string, seq uint64, data []byte, touched func(d *Delivery, created bool)) {
	key, ok := store.EndpointOfLogSubject(subject)
	if !ok {
		return
	}
	rs, err := store.DecodeLogRecords(data)
	if err != nil {
		return
	}
	for i := range rs {
		d, created := f.apply(key.Namespace, key.Name, seq, i, &rs[i])
		if touched != nil {
			touched(d, created)
		}
	}
}

// Follow folds the records of namespace ns (of one WebhookConfig when
// webhook is not empty) stored after sequence after into f, calling
// touched for every delivery a record changed, until ctx ends.
func (r *Reader) Follow(ctx context.Context, ns, webhook string, after uint64, f *Folder, touched func(d *Delivery, created bool)) error {
	cons, err := r.js.OrderedConsumer(ctx, store.StreamDeliveryLog, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{Filter(ns, webhook)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
	})
	if err != nil {
		return fmt.Errorf("following the delivery log: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("following the delivery log: %w", err)
	}
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil //nolint:nilerr // the watch was stopped: not an error of the log
			}
			return fmt.Errorf("following the delivery log: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		foldMsg(f, m.Subject(), meta.Sequence.Stream, m.Data(), touched)
	}
}
