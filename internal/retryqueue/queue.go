// Package retryqueue keeps deliveries that wait for their next attempt on
// disk, in the order they fall due, so that the manager's memory does not
// grow with a receiver's outage.
//
// A JetStream message schedule per waiting retry (what the manager used
// before) keeps per-schedule state in the NATS server's memory, and firing
// schedules reads their message blocks into 4 MiB buffers: about 12 KB of
// resident memory per waiting delivery, so 300,000 deliveries waiting on
// one receiver's outage need gigabytes. The Queue keeps them in Pebble (an
// LSM key-value store) under a key that starts with the due time; memory
// is bounded by its memtables and block cache, whatever the backlog.
//
// Keys:
//
//	r/<due><id>   -> the message (Unix nanoseconds, big-endian, then the caller's id)
//
// Put makes an entry durable (fsync, grouped with concurrent writers)
// before it returns: the caller acknowledges the delivery it replaces only
// after that. Due reads the entries that fell due, in due order; the caller
// stores them elsewhere and then deletes them. A crash between the two
// hands them out again: at least once, never lost.
package retryqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Queue is the on-disk, due-ordered set of waiting messages. It is safe for
// concurrent use.
type Queue struct {
	db    *pebble.DB
	cache *pebble.Cache

	// closeMu is held for reading by every use of db and for writing by
	// Close: a closed queue answers ErrClosed.
	closeMu sync.RWMutex
	closed  bool

	mu sync.Mutex
	// count is the number of entries held (counted at Open, kept since).
	count int64
	// low is a time no entry held is due before (zero: read from the
	// start): Due starts reading there, so the deletions of entries already
	// handed out (tombstones until a compaction drops them) are not read
	// again. putMin is the earliest due time put since Due last started.
	low, putMin time.Time
	// wake is signalled when Put stores an entry due before the time the
	// reader was told to wait for.
	wake     chan struct{}
	wakeWhen time.Time
}

// ErrClosed is returned by a Queue that was closed.
var ErrClosed = errors.New("retryqueue: the queue is closed")

// Options configures a Queue.
type Options struct {
	// Dir is the queue's directory (created if missing).
	Dir string
	// CacheBytes is the block cache (default 8 MiB); MemTableBytes each
	// memtable (default 4 MiB; at most two are kept in memory).
	CacheBytes, MemTableBytes int64
}

var prefix = []byte("r/")

// prefixEnd is the first key after every r/ key.
var prefixEnd = []byte("r0")

// Open opens or creates the queue in opts.Dir.
func Open(opts Options) (*Queue, error) {
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 8 << 20
	}
	if opts.MemTableBytes <= 0 {
		opts.MemTableBytes = 4 << 20
	}
	cache := pebble.NewCache(opts.CacheBytes)
	db, err := pebble.Open(opts.Dir, &pebble.Options{
		Cache:                       cache,
		MemTableSize:                uint64(opts.MemTableBytes),
		MemTableStopWritesThreshold: 2,
		MaxOpenFiles:                256,
		Logger:                      quietLogger{},
	})
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("opening the retry queue in %s: %w", opts.Dir, err)
	}
	q := &Queue{db: db, cache: cache, wake: make(chan struct{}, 1)}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd})
	if err != nil {
		_ = q.Close()
		return nil, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		q.count++
	}
	if err := it.Close(); err != nil {
		_ = q.Close()
		return nil, fmt.Errorf("reading the retry queue: %w", err)
	}
	return q, nil
}

func (q *Queue) use() (done func(), err error) {
	q.closeMu.RLock()
	if q.closed {
		q.closeMu.RUnlock()
		return nil, ErrClosed
	}
	return q.closeMu.RUnlock, nil
}

// Close closes the queue.
func (q *Queue) Close() error {
	q.closeMu.Lock()
	defer q.closeMu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	err := q.db.Close()
	q.cache.Unref()
	return err
}

// Entry is one message due at a time. ID names it among the entries due at
// the same time; an entry put again with the same due time and ID replaces
// the one there.
type Entry struct {
	Due  time.Time
	ID   string
	Data []byte

	key []byte
}

// Put stores entries durably: they are on disk (fsync) when Put returns.
func (q *Queue) Put(entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	done, err := q.use()
	if err != nil {
		return err
	}
	defer done()
	b := q.db.NewBatch()
	defer b.Close()
	earliest := entries[0].Due
	for _, e := range entries {
		if err := b.Set(key(e.Due, e.ID), e.Data, nil); err != nil {
			return err
		}
		if e.Due.Before(earliest) {
			earliest = e.Due
		}
	}
	// Counted before they can be read and deleted, so the count never
	// goes below what is held.
	q.mu.Lock()
	q.count += int64(len(entries))
	q.mu.Unlock()
	if err := b.Commit(pebble.Sync); err != nil {
		q.mu.Lock()
		q.count -= int64(len(entries))
		q.mu.Unlock()
		return fmt.Errorf("writing the retry queue: %w", err)
	}
	// Lower the read position to them, and tell Delete that they came
	// (Due reads the position and forgets putMin together, so a Due that
	// began before they were visible sees putMin when it deletes).
	q.mu.Lock()
	if !q.low.IsZero() && earliest.Before(q.low) {
		q.low = earliest
	}
	if q.putMin.IsZero() || earliest.Before(q.putMin) {
		q.putMin = earliest
	}
	signal := !q.wakeWhen.IsZero() && earliest.Before(q.wakeWhen)
	q.mu.Unlock()
	if signal {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Due returns up to max entries due at or before now, earliest first, and
// when the next entry not returned falls due (zero when there is none).
// Due and Delete are for one reader at a time.
func (q *Queue) Due(now time.Time, max int) (entries []Entry, next time.Time, err error) {
	done, err := q.use()
	if err != nil {
		return nil, time.Time{}, err
	}
	defer done()
	q.mu.Lock()
	low := q.low
	q.putMin = time.Time{}
	q.mu.Unlock()
	lower := prefix
	if !low.IsZero() {
		lower = key(low, "")
	}
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd})
	if err != nil {
		return nil, time.Time{}, err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		due, valid := dueOf(k)
		if !valid {
			continue
		}
		if due.After(now) || len(entries) == max {
			next = due
			break
		}
		entries = append(entries, Entry{
			Due:  due,
			ID:   string(k[len(prefix)+8:]),
			Data: append([]byte(nil), it.Value()...),
			key:  append([]byte(nil), k...),
		})
	}
	if err := it.Error(); err != nil {
		return nil, time.Time{}, fmt.Errorf("reading the retry queue: %w", err)
	}
	return entries, next, nil
}

// Delete removes entries that Due returned (once stored elsewhere). The
// deletion need not survive a crash: an entry deleted again is handed out
// again, at least once.
func (q *Queue) Delete(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	done, err := q.use()
	if err != nil {
		return err
	}
	defer done()
	b := q.db.NewBatch()
	defer b.Close()
	latest := entries[0].Due
	for _, e := range entries {
		k := e.key
		if k == nil {
			k = key(e.Due, e.ID)
		}
		if err := b.Delete(k, nil); err != nil {
			return err
		}
		if e.Due.After(latest) {
			latest = e.Due
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("deleting from the retry queue: %w", err)
	}
	q.count -= int64(len(entries))
	// Due read every entry from the read position to the last one deleted:
	// nothing is held before that one now, except entries put since Due
	// started, which may be due earlier.
	low := latest
	if !q.putMin.IsZero() && q.putMin.Before(low) {
		low = q.putMin
	}
	q.low = low
	return nil
}

// Wait blocks until an entry may be due: until next (when not zero), an
// entry put due before it, stop being closed, or at most max.
func (q *Queue) Wait(stop <-chan struct{}, next time.Time, now time.Time, max time.Duration) {
	d := max
	if !next.IsZero() {
		if until := next.Sub(now); until < d {
			d = until
		}
	}
	if d <= 0 {
		return
	}
	q.mu.Lock()
	q.wakeWhen = now.Add(d)
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.wakeWhen = time.Time{}
		q.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
	case <-t.C:
	case <-q.wake:
	}
}

// Len returns the number of entries held.
func (q *Queue) Len() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count
}

// Metrics returns the bytes the queue keeps on disk and in memory
// (memtables and block cache in use).
func (q *Queue) Metrics() (diskBytes, memBytes int64) {
	done, err := q.use()
	if err != nil {
		return 0, 0
	}
	defer done()
	m := q.db.Metrics()
	return int64(m.DiskSpaceUsage()), int64(m.MemTable.Size) + m.BlockCache.Size
}

func key(due time.Time, id string) []byte {
	b := make([]byte, 0, len(prefix)+8+len(id))
	b = append(b, prefix...)
	b = binary.BigEndian.AppendUint64(b, uint64(due.UnixNano()))
	return append(b, id...)
}

func dueOf(k []byte) (time.Time, bool) {
	if len(k) < len(prefix)+8 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[len(prefix):]))), true
}

// quietLogger drops Pebble's informational lines and keeps its fatal ones.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("retry queue: "+format, args...))
}
