package store

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrFull is returned (wrapped in ErrUnavailable, so the ingestion API
// answers 503) while the store holds as much as its bound allows: new
// events are refused until deliveries drain it. Nothing already
// acknowledged is dropped.
var ErrFull = fmt.Errorf("%w: the event store is full", ErrUnavailable)

// The store refuses new events once it holds fullShare of its bound and
// takes them again below roomShare: the rest is room for the work on what
// was accepted already (the fan-out's deliveries, retries, outcomes, failed
// deliveries), which the embedded server's hard cap (the bound itself)
// would otherwise stop.
const (
	fullShare = 0.90
	roomShare = 0.80
)

// capacityEvery is how often the store's usage is read.
const capacityEvery = time.Second

// autoShare is the part of the data directory's file system the embedded
// store is bounded to when Options.MaxBytes is 0.
const autoShare = 0.85

// capacity is what the store knows of its bound.
type capacity struct {
	limit atomic.Int64 // 0: unbounded
	used  atomic.Int64
	full  atomic.Bool
}

// resolveLimit returns the store's bound: opts.MaxBytes when set, and
// otherwise, with the embedded server, autoShare of the file system that
// holds the data directory (0, unbounded, with an external NATS: its
// account limits apply there).
func resolveLimit(opts Options) int64 {
	if opts.MaxBytes != 0 || opts.URL != "" {
		return max(opts.MaxBytes, 0)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(opts.DataDir, &st); err != nil {
		return 0
	}
	return int64(float64(st.Blocks) * float64(st.Bsize) * autoShare)
}

// Usage returns the bytes the store holds (JetStream's file store, and
// with the embedded server the idempotency index and the retry queue) and
// its bound (0: unbounded), as last read.
func (s *Store) Usage() (used, limit int64) { return s.capacity.used.Load(), s.capacity.limit.Load() }

// Writable returns ErrFull while the store is full, and nil otherwise.
func (s *Store) Writable() error {
	if s.capacity.full.Load() {
		return ErrFull
	}
	return nil
}

// Wrote counts n bytes just stored, until the next reading of the usage
// (every capacityEvery) replaces the estimate: a burst of events between
// two readings cannot carry the store past its bound.
func (s *Store) Wrote(n int64) {
	used := s.capacity.used.Add(n)
	if limit := s.capacity.limit.Load(); limit > 0 {
		s.decide(used, limit)
	}
}

// decide sets the store full or not from its usage.
func (s *Store) decide(used, limit int64) {
	switch {
	case float64(used) >= fullShare*float64(limit):
		if !s.capacity.full.Swap(true) {
			s.opts.Logger.Info("The event store is full: new events are refused (503) until deliveries drain it", "usedBytes", used, "maxBytes", limit)
		}
	case float64(used) < roomShare*float64(limit):
		if s.capacity.full.Swap(false) {
			s.opts.Logger.Info("The event store has room again: new events are accepted", "usedBytes", used, "maxBytes", limit)
		}
	}
}

// checkCapacity reads the store's usage and decides whether it is full.
func (s *Store) checkCapacity(ctx context.Context) error {
	info, err := s.js.AccountInfo(ctx)
	if err != nil {
		return err
	}
	used := int64(info.Store)
	if s.index != nil {
		disk, _ := s.index.Metrics()
		used += disk
	}
	if s.retries != nil {
		disk, _ := s.retries.Metrics()
		used += disk
	}
	s.capacity.used.Store(used)
	limit := s.capacity.limit.Load()
	if limit <= 0 {
		s.capacity.full.Store(false)
		return nil
	}
	s.decide(used, limit)
	return nil
}

// watchCapacity reads the store's usage every capacityEvery until stop is closed.
func (s *Store) watchCapacity(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(capacityEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), capacityEvery)
		_ = s.checkCapacity(ctx) // a failed read keeps the last decision
		if _, err := s.trimDeliveryLog(ctx); err != nil {
			s.opts.Logger.Error(err, "Trimming the delivery log failed; retrying in a second (the stream's own limits still hold)")
		}
		cancel()
	}
}
