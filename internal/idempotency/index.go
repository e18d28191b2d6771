// Package idempotency remembers, on disk, which event ids producers posted
// within the idempotency window, so that the manager's memory does not grow
// with the window.
//
// JetStream's own duplicate window keeps every message ID of the window in
// memory (a map entry per id, rebuilt by reading the stored messages at
// every start): at a steady 1,000 events a second with ids, a 24-hour
// window is 86 million entries. The Index keeps
// them in Pebble (an LSM key-value store): writes go to its write-ahead log
// and memtable, and a lookup of an id not seen (almost every lookup) is
// answered by the tables' bloom filters through a block cache of fixed size.
// So memory is bounded by the cache and the memtables, whatever the rate or
// the window; docs/operations.md gives what the disk holds per id.
//
// Keys:
//
//	i/<key>            -> acceptance time (8 bytes, Unix nanoseconds, big-endian)
//	t/<time><key>      -> nothing: the expiry order
//	m/last             -> the latest acceptance time recorded
//
// Expire deletes the i/ entries older than the window (unless a newer post
// of the same key replaced them) and the t/ range before the cut.
package idempotency

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Index is the on-disk set of keys accepted within the window. It is safe
// for concurrent use.
type Index struct {
	db     *pebble.DB
	cache  *pebble.Cache
	window time.Duration

	// closeMu is held for reading by every use of db and for writing by
	// Close: a closed index answers ErrClosed instead of touching the
	// closed store (the ingestion API may still be answering while the
	// manager stops).
	closeMu sync.RWMutex
	closed  bool

	mu   sync.Mutex // serializes Expire against itself
	last time.Time  // latest time recorded (guarded by lastMu)
	// lastStored is the m/last value written (guarded by lastMu): it is
	// written again only when last is lastStep past it, saving a key a
	// Record.
	lastStored time.Time

	lastMu sync.Mutex

	// stopSync ends the goroutine that flushes the write-ahead log to the
	// disk every Options.SyncInterval (nil when every commit is synced).
	stopSync chan struct{}
	syncDone chan struct{}
}

// ErrClosed is returned by an Index that was closed.
var ErrClosed = errors.New("idempotency: the index is closed")

// use holds the index open for one operation; done releases it.
func (x *Index) use() (done func(), err error) {
	x.closeMu.RLock()
	if x.closed {
		x.closeMu.RUnlock()
		return nil, ErrClosed
	}
	return x.closeMu.RUnlock, nil
}

// Options configures an Index.
type Options struct {
	// Dir is the index's directory (created if missing).
	Dir string
	// Window is how long a key is remembered.
	Window time.Duration
	// CacheBytes is the block cache (default 16 MiB); MemTableBytes each
	// memtable (default 4 MiB; at most two are kept in memory).
	CacheBytes, MemTableBytes int64
	// SyncInterval is how often the write-ahead log is flushed to the disk
	// (the event store's --store-sync): every Record is written to the
	// operating system before it returns, so a killed process loses
	// nothing recorded, and a machine crash can lose the records of the
	// last interval. Negative: every Record is flushed to the disk before
	// it returns. 0: one second.
	SyncInterval time.Duration
	// OnSyncError is told when a periodic flush fails (optional).
	OnSyncError func(error)
}

var (
	prefixID   = []byte("i/")
	prefixTime = []byte("t/")
	keyLast    = []byte("m/last")
)

// lastStep is how far m/last may lag behind the latest time recorded: it
// only says where a reindex starts reading (minutes before it).
const lastStep = time.Second

// Open opens or creates the index in opts.Dir.
func Open(opts Options) (*Index, error) {
	if opts.Window <= 0 {
		return nil, errors.New("idempotency: the window must be positive")
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 16 << 20
	}
	if opts.MemTableBytes <= 0 {
		opts.MemTableBytes = 4 << 20
	}
	if opts.SyncInterval == 0 {
		opts.SyncInterval = time.Second
	}
	cache := pebble.NewCache(opts.CacheBytes)
	var walFS *intervalSyncFS
	fs := vfs.Default
	if opts.SyncInterval > 0 {
		walFS = newIntervalSyncFS(vfs.Default)
		fs = walFS
	}
	po := &pebble.Options{
		FS:                          fs,
		Cache:                       cache,
		MemTableSize:                uint64(opts.MemTableBytes),
		MemTableStopWritesThreshold: 2,
		MaxOpenFiles:                256,
		Logger:                      quietLogger{},
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].FilterType = pebble.TableFilter
	}
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("opening the idempotency index in %s: %w", opts.Dir, err)
	}
	x := &Index{db: db, cache: cache, window: opts.Window}
	if walFS != nil {
		x.stopSync, x.syncDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(x.syncDone)
			walFS.run(x.stopSync, opts.SyncInterval, opts.OnSyncError)
		}()
	}
	if v, closer, err := db.Get(keyLast); err == nil {
		if len(v) == 8 {
			x.last = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			x.lastStored = x.last
		}
		_ = closer.Close()
	} else if !errors.Is(err, pebble.ErrNotFound) {
		_ = x.Close()
		return nil, fmt.Errorf("reading the idempotency index: %w", err)
	}
	return x, nil
}

// Close closes the index.
func (x *Index) Close() error {
	x.closeMu.Lock()
	defer x.closeMu.Unlock()
	if x.closed {
		return nil
	}
	x.closed = true
	if x.stopSync != nil {
		close(x.stopSync)
		<-x.syncDone
	}
	err := x.db.Close()
	x.cache.Unref()
	return err
}

// Window returns how long a key is remembered.
func (x *Index) Window() time.Duration { return x.window }

// Seen reports whether key was recorded less than the window before now.
func (x *Index) Seen(key string, now time.Time) (bool, error) {
	done, err := x.use()
	if err != nil {
		return false, err
	}
	defer done()
	v, closer, err := x.db.Get(idKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the idempotency index: %w", err)
	}
	defer func() { _ = closer.Close() }() // releases the value; nothing to report
	if len(v) != 8 {
		return false, nil
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	return now.Sub(at) < x.window, nil
}

// Entry is one key accepted at a time.
type Entry struct {
	Key string
	At  time.Time
}

// Record remembers entries. It returns once they are in the write-ahead
// log as the operating system holds it, so a killed process loses none of
// them; Options.SyncInterval says when they reach the disk. Concurrent
// Records share the log's writes (Pebble commits them as a group).
func (x *Index) Record(entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	done, err := x.use()
	if err != nil {
		return err
	}
	defer done()
	b := x.db.NewBatch()
	defer func() { _ = b.Close() }() // fails only when closed twice
	latest := time.Time{}
	var val [8]byte
	for _, e := range entries {
		binary.BigEndian.PutUint64(val[:], uint64(e.At.UnixNano()))
		if err := b.Set(idKey(e.Key), val[:], nil); err != nil {
			return err
		}
		if err := b.Set(timeKey(e.At, e.Key), nil, nil); err != nil {
			return err
		}
		if e.At.After(latest) {
			latest = e.At
		}
	}
	x.lastMu.Lock()
	if latest.After(x.last) {
		x.last = latest
	}
	storeLast := x.last.Sub(x.lastStored) >= lastStep
	if storeLast {
		x.lastStored = x.last
		binary.BigEndian.PutUint64(val[:], uint64(x.last.UnixNano()))
	}
	x.lastMu.Unlock()
	if storeLast {
		if err := b.Set(keyLast, val[:], nil); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("writing the idempotency index: %w", err)
	}
	return nil
}

// Last returns the latest acceptance time recorded (zero when none; after a
// reopening, up to lastStep earlier than the latest): after
// a crash, events stored from a little before it on may be missing from the
// index and are recorded again from the event store.
func (x *Index) Last() time.Time {
	x.lastMu.Lock()
	defer x.lastMu.Unlock()
	return x.last
}

// Expire forgets the keys recorded a window or longer before now, unless
// recorded again since. It returns how many it forgot.
func (x *Index) Expire(now time.Time) (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	done, err := x.use()
	if err != nil {
		return 0, err
	}
	defer done()
	cut := now.Add(-x.window)
	upper := timeKey(cut, "")
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: prefixTime, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	b := x.db.NewBatch()
	defer func() { _ = b.Close() }() // fails only when closed twice
	n := 0
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) < len(prefixTime)+8 {
			continue
		}
		at := int64(binary.BigEndian.Uint64(k[len(prefixTime):]))
		key := k[len(prefixTime)+8:]
		ik := append(append([]byte(nil), prefixID...), key...)
		v, closer, err := x.db.Get(ik)
		if err == nil {
			// Only the entry this time wrote: a later post of the key (after
			// it expired once) wrote a newer time.
			if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) == at {
				if err := b.Delete(ik, nil); err != nil {
					_ = closer.Close()
					_ = it.Close()
					return 0, err
				}
				n++
			}
			_ = closer.Close()
		} else if !errors.Is(err, pebble.ErrNotFound) {
			_ = it.Close()
			return 0, err
		}
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if err := b.DeleteRange(prefixTime, upper, nil); err != nil {
		return 0, err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("expiring the idempotency index: %w", err)
	}
	return n, nil
}

// Run expires old keys every interval until stop is closed, reporting
// errors to onErr.
func (x *Index) Run(stop <-chan struct{}, interval time.Duration, now func() time.Time, onErr func(error)) {
	every(stop, interval, func() error {
		_, err := x.Expire(now())
		return err
	}, onErr)
}

// every calls f every interval until stop is closed, reporting its errors
// to onErr (when not nil).
func every(stop <-chan struct{}, interval time.Duration, f func() error, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := f(); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}

// Metrics returns the bytes the index keeps on disk and in memory
// (memtables and block cache in use).
func (x *Index) Metrics() (diskBytes, memBytes int64) {
	done, err := x.use()
	if err != nil {
		return 0, 0
	}
	defer done()
	m := x.db.Metrics()
	disk := int64(m.DiskSpaceUsage())
	mem := int64(m.MemTable.Size) + m.BlockCache.Size
	return disk, mem
}

func idKey(key string) []byte {
	return append(append(make([]byte, 0, len(prefixID)+len(key)), prefixID...), key...)
}

func timeKey(at time.Time, key string) []byte {
	b := make([]byte, 0, len(prefixTime)+8+len(key))
	b = append(b, prefixTime...)
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixNano()))
	return append(b, key...)
}

// quietLogger drops Pebble's informational lines and keeps its fatal ones.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("idempotency index: "+format, args...))
}
