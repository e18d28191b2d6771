// Package retryqueue keeps deliveries that wait for their next attempt on
// disk, in the order they fall due, so that the manager's memory does not
// grow with a receiver's outage.
//
// A JetStream message schedule per waiting retry (what the manager used
// before) keeps per-schedule state in the NATS server's memory, and firing
// schedules reads their message blocks into the store's block buffers, so
// memory grew with a receiver's outage (docs/benchmarks.md, "Soak runs",
// has the figures). The Queue keeps them in Pebble (an LSM key-value store)
// under a key that starts with a partition (the caller's: one per endpoint)
// and the due time; memory is bounded by its memtables and block cache and
// a few words per partition, whatever the backlog.
//
// Keys:
//
//	r/<part><due><id>   -> the data (part: 8 bytes; due: Unix nanoseconds; both big-endian)
//
// Partitions let the reader take each endpoint's due entries at the pace
// its endpoint is delivered, instead of all due entries at once: a receiver
// that is down for an hour has its retries wait here, on disk, not in the
// delivery stream.
//
// Put makes an entry durable (fsync, grouped with concurrent writers)
// before it returns: the caller acknowledges the delivery it replaces only
// after that. Due reads a partition's entries that fell due, in due order;
// the caller stores them elsewhere and then deletes them. A crash in
// between hands them out again: at least once, never lost.
package retryqueue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Queue is the on-disk, due-ordered set of waiting entries, by partition.
// It is safe for concurrent use; Due and Delete are for one reader.
type Queue struct {
	db    *pebble.DB
	cache *pebble.Cache

	// closeMu is held for reading by every use of db and for writing by
	// Close: a closed queue answers ErrClosed.
	closeMu sync.RWMutex
	closed  bool

	mu    sync.Mutex
	parts map[uint64]*part
	count int64
	// wake is signalled when Put stores an entry due before the time the
	// reader was told to wait for, or Kick is called.
	wake     chan struct{}
	wakeWhen time.Time

	// compacting is set while a compaction of the emptied queue runs;
	// Close cancels it with stopCompact.
	compacting  atomic.Bool
	compactCtx  context.Context
	stopCompact context.CancelFunc
	// lastCompact is when the last one started, compactLater the timer of
	// one put off by compactEvery (both guarded by mu).
	lastCompact  time.Time
	compactLater *time.Timer
}

// compactEvery bounds how often an emptied queue is compacted: a queue
// emptied sooner after the last compaction is compacted when the interval
// is over, if it is still empty then (the disk a backlog took counts
// against the store's bound, so it must not wait for the next backlog).
const compactEvery = 10 * time.Second

// part is what the queue knows of one partition in memory.
type part struct {
	count int64
	// next is the earliest due time of an entry held (zero: none).
	next time.Time
	// low is a time no entry held is due before (zero: read from the
	// partition's start): Due starts reading there, so the deletions of
	// entries already handed out (tombstones until a compaction drops
	// them) are not read again. putMin is the earliest due time put since
	// Due last started reading the partition.
	low, putMin time.Time
	// after is the due time of the first entry Due did not return.
	after time.Time
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

const keyHead = 2 + 8 + 8 // prefix, part, due

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
	q := &Queue{db: db, cache: cache, parts: map[uint64]*part{}, wake: make(chan struct{}, 1)}
	q.compactCtx, q.stopCompact = context.WithCancel(context.Background())
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd})
	if err != nil {
		_ = q.Close()
		return nil, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		pk, due, valid := parseKey(it.Key())
		if !valid {
			continue
		}
		p := q.parts[pk]
		if p == nil {
			p = &part{next: due, low: due}
			q.parts[pk] = p
		}
		p.count++
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
	q.stopCompact()
	q.mu.Lock()
	if q.compactLater != nil {
		q.compactLater.Stop()
	}
	q.mu.Unlock()
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

// Entry is one entry of a partition, due at a time. ID names it among the
// partition's entries due at the same time; an entry put again with the
// same partition, due time and ID replaces the one there.
type Entry struct {
	Part uint64
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
	defer func() { _ = b.Close() }() // fails only when closed twice
	for _, e := range entries {
		if err := b.Set(key(e.Part, e.Due, e.ID), e.Data, nil); err != nil {
			return err
		}
	}
	// Counted before they can be read and deleted, so a count never goes
	// below what is held.
	q.mu.Lock()
	for _, e := range entries {
		p := q.partLocked(e.Part)
		p.count++
	}
	q.count += int64(len(entries))
	q.mu.Unlock()
	if err := b.Commit(pebble.Sync); err != nil {
		q.mu.Lock()
		for _, e := range entries {
			q.partLocked(e.Part).count--
		}
		q.count -= int64(len(entries))
		q.mu.Unlock()
		return fmt.Errorf("writing the retry queue: %w", err)
	}
	// Now they can be read: lower each partition's read position and next
	// time to them, and tell a Due already reading that they came (Due
	// reads the position and forgets putMin together, so one that began
	// before they were visible sees putMin when it is done).
	q.mu.Lock()
	signal := false
	for _, e := range entries {
		// (Delete may have dropped the partition: the entries were read
		// and deleted already.)
		p := q.partLocked(e.Part)
		if !p.low.IsZero() && e.Due.Before(p.low) {
			p.low = e.Due
		}
		if p.putMin.IsZero() || e.Due.Before(p.putMin) {
			p.putMin = e.Due
		}
		if p.next.IsZero() || e.Due.Before(p.next) {
			p.next = e.Due
		}
		if !q.wakeWhen.IsZero() && e.Due.Before(q.wakeWhen) {
			signal = true
		}
	}
	q.mu.Unlock()
	if signal {
		q.Kick()
	}
	return nil
}

func (q *Queue) partLocked(pk uint64) *part {
	p := q.parts[pk]
	if p == nil {
		p = &part{}
		q.parts[pk] = p
	}
	return p
}

// Kick ends a Wait now (the reader has something else to do: a partition
// it held back has room again).
func (q *Queue) Kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// DueParts returns the partitions that hold an entry due at or before now,
// earliest first.
func (q *Queue) DueParts(now time.Time) []uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	type pd struct {
		pk  uint64
		due time.Time
	}
	var due []pd
	for pk, p := range q.parts {
		if !p.next.IsZero() && !p.next.After(now) {
			due = append(due, pd{pk, p.next})
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].due.Before(due[j].due) })
	out := make([]uint64, len(due))
	for i := range due {
		out[i] = due[i].pk
	}
	return out
}

// Next returns when the earliest entry of the partitions that skip does
// not name falls due (zero when there is none).
func (q *Queue) Next(skip func(uint64) bool) time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	var next time.Time
	for pk, p := range q.parts {
		if p.next.IsZero() || (skip != nil && skip(pk)) {
			continue
		}
		if next.IsZero() || p.next.Before(next) {
			next = p.next
		}
	}
	return next
}

// Due returns up to limit of partition pk's entries due at or before now,
// earliest first.
func (q *Queue) Due(pk uint64, now time.Time, limit int) ([]Entry, error) {
	done, err := q.use()
	if err != nil {
		return nil, err
	}
	defer done()
	q.mu.Lock()
	p := q.partLocked(pk)
	low := p.low
	p.putMin = time.Time{}
	q.mu.Unlock()
	lower := partKey(pk)
	if !low.IsZero() {
		lower = key(pk, low, "")
	}
	upper := prefixEnd
	if pk != ^uint64(0) {
		upper = partKey(pk + 1)
	}
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer func() { _ = it.Close() }() // a failed read is it.Error(), checked below
	var entries []Entry
	var after time.Time
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		_, due, valid := parseKey(k)
		if !valid {
			continue
		}
		if due.After(now) || len(entries) == limit {
			after = due
			break
		}
		entries = append(entries, Entry{
			Part: pk,
			Due:  due,
			ID:   string(k[keyHead:]),
			Data: append([]byte(nil), it.Value()...),
			key:  append([]byte(nil), k...),
		})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("reading the retry queue: %w", err)
	}
	q.mu.Lock()
	p.after = after
	if len(entries) == 0 {
		// Nothing to delete: what is held starts at after, or at what was
		// put since the read began.
		p.next = earliest(after, p.putMin)
	}
	q.mu.Unlock()
	return entries, nil
}

// Delete removes entries that Due returned for partition pk (once stored
// elsewhere). The deletion need not survive a crash: an entry deleted
// again is handed out again, at least once.
func (q *Queue) Delete(pk uint64, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	done, err := q.use()
	if err != nil {
		return err
	}
	defer done()
	b := q.db.NewBatch()
	defer func() { _ = b.Close() }() // fails only when closed twice
	latest := entries[0].Due
	for _, e := range entries {
		k := e.key
		if k == nil {
			k = key(e.Part, e.Due, e.ID)
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
	p := q.partLocked(pk)
	p.count -= int64(len(entries))
	q.count -= int64(len(entries))
	// Due read every entry from the read position to the last one deleted:
	// nothing is held before that one now, except entries put since Due
	// started, which may be due earlier.
	p.low = earliest(latest, p.putMin)
	p.next = earliest(p.after, p.putMin)
	if p.count <= 0 && p.next.IsZero() {
		delete(q.parts, pk)
	}
	if q.count == 0 {
		// Emptied (an outage drained): the deletions are tombstones until
		// a compaction drops them with the entries, and with no more
		// writes none may be due. Compact, so the disk the backlog took
		// is given back.
		q.compactEmptiedLocked()
	}
	return nil
}

// compactEmptiedLocked compacts the emptied queue now, or when compactEvery
// has passed since the last compaction.
func (q *Queue) compactEmptiedLocked() {
	if wait := compactEvery - time.Since(q.lastCompact); wait > 0 {
		if q.compactLater == nil {
			q.compactLater = time.AfterFunc(wait, func() {
				q.mu.Lock()
				defer q.mu.Unlock()
				q.compactLater = nil
				if q.count == 0 {
					q.compactEmptiedLocked()
				}
			})
		}
		return
	}
	if q.compacting.CompareAndSwap(false, true) {
		q.lastCompact = time.Now()
		go q.compact()
	}
}

// compact compacts the whole queue.
func (q *Queue) compact() {
	defer q.compacting.Store(false)
	done, err := q.use()
	if err != nil {
		return
	}
	defer done()
	_ = q.db.Compact(q.compactCtx, prefix, prefixEnd, false)
}

// earliest returns the earlier of a and b, ignoring zero times.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// Wait blocks until an entry may be due: until next (when not zero), an
// entry put due before it, Kick, stop being closed, or at most longest.
func (q *Queue) Wait(stop <-chan struct{}, next time.Time, now time.Time, longest time.Duration) {
	d := longest
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

// PartLen returns the number of partition pk's entries held.
func (q *Queue) PartLen(pk uint64) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if p := q.parts[pk]; p != nil {
		return p.count
	}
	return 0
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

func partKey(pk uint64) []byte {
	b := make([]byte, 0, len(prefix)+8)
	b = append(b, prefix...)
	return binary.BigEndian.AppendUint64(b, pk)
}

func key(pk uint64, due time.Time, id string) []byte {
	b := make([]byte, 0, keyHead+len(id))
	b = append(b, prefix...)
	b = binary.BigEndian.AppendUint64(b, pk)
	b = binary.BigEndian.AppendUint64(b, uint64(due.UnixNano()))
	return append(b, id...)
}

func parseKey(k []byte) (pk uint64, due time.Time, ok bool) {
	if len(k) < keyHead {
		return 0, time.Time{}, false
	}
	pk = binary.BigEndian.Uint64(k[len(prefix):])
	return pk, time.Unix(0, int64(binary.BigEndian.Uint64(k[len(prefix)+8:]))), true
}

// quietLogger drops Pebble's informational lines and keeps its fatal ones.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("retry queue: "+format, args...))
}
