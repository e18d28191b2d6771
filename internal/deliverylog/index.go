package deliverylog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// index is the delivery log's lookup index, on disk in Pebble: which
// stream sequences hold the records of each delivery, and each
// WebhookConfig's and each namespace's deliveries in the order they were
// first logged. It is a cache of the stream: the Reader builds it by
// following the stream (indexer.go) and can build it again from nothing.
// Memory is bounded by Pebble's block cache and memtables, whatever the
// deliveries kept.
//
// Keys (<seq> is a stream sequence, 8 bytes big-endian; <id> the event id
// escaped, store.EscapeEventID; "/" appears in no namespace, WebhookConfig
// name or escaped id):
//
//	d/<ns>/<id>/<webhook>  -> the delivery's sequences, ascending (uvarints)
//	o/<ns>/<webhook>/<seq> -> <time><id>: the WebhookConfig's deliveries by first sequence
//	n/<ns>/<seq>           -> <time><webhook>/<id>: the namespace's deliveries by first sequence
//	p/<seq>                -> <ns>/<id>/<webhook>: the prune queue, by the delivery's last sequence seen when queued
//	m/last                 -> the last stream sequence indexed
//	m/stream               -> the stream's creation time (Unix nanoseconds): a new stream starts the index over
//
// <time> is the Unix nanoseconds of the stream's timestamp of the
// delivery's first record (8 bytes): a list with since stops at it.
type index struct {
	db    *pebble.DB
	cache *pebble.Cache

	// closeMu is held for reading by every use of db and for writing by
	// close: a closed index answers errClosed.
	closeMu sync.RWMutex
	closed  bool

	// mu guards last and progress: progress is closed, and replaced, every
	// time last moves on.
	mu       sync.Mutex
	last     uint64
	created  int64
	progress chan struct{}

	// recent holds the sequences of the deliveries indexed last (used by
	// the indexer only), so that the records that follow a delivery's
	// first (its attempts, soon after) are added without reading the
	// index.
	recent recent
}

// recentSize is how many deliveries a generation of recent holds: two
// generations, a few MiB at most.
const recentSize = 8192

// recent is a two-generation cache of deliveries' sequences by key: when
// the newer generation is full it becomes the older, and the older goes.
type recent struct {
	newer, older map[string][]byte
}

func (c *recent) get(k []byte) ([]byte, bool) {
	if v, ok := c.newer[string(k)]; ok {
		return v, true
	}
	v, ok := c.older[string(k)]
	return v, ok
}

func (c *recent) put(k, v []byte) {
	if c.newer == nil || len(c.newer) >= recentSize {
		c.older, c.newer = c.newer, make(map[string][]byte, recentSize)
	}
	c.newer[string(k)] = v
}

func (c *recent) clear() { c.newer, c.older = nil, nil }

var errClosed = errors.New("the delivery log's index is closed")

var (
	prefixDelivery  = []byte("d/")
	prefixWebhook   = []byte("o/")
	prefixNamespace = []byte("n/")
	prefixPrune     = []byte("p/")
	keyLast         = []byte("m/last")
	keyStream       = []byte("m/stream")
)

// indexOptions configures the index's Pebble store.
type indexOptions struct {
	dir                       string
	cacheBytes, memTableBytes int64
}

func openIndex(opts indexOptions) (*index, error) {
	if opts.cacheBytes <= 0 {
		opts.cacheBytes = 8 << 20
	}
	if opts.memTableBytes <= 0 {
		opts.memTableBytes = 4 << 20
	}
	cache := pebble.NewCache(opts.cacheBytes)
	po := &pebble.Options{
		Cache:                       cache,
		MemTableSize:                uint64(opts.memTableBytes),
		MemTableStopWritesThreshold: 2,
		MaxOpenFiles:                256,
		Logger:                      quietLogger{},
	}
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		po.Levels[i].FilterType = pebble.TableFilter
	}
	db, err := pebble.Open(opts.dir, po)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("opening the delivery log's index in %s: %w", opts.dir, err)
	}
	x := &index{db: db, cache: cache, progress: make(chan struct{})}
	for _, kv := range []struct {
		key []byte
		to  func(uint64)
	}{{keyLast, func(v uint64) { x.last = v }}, {keyStream, func(v uint64) { x.created = int64(v) }}} {
		v, closer, err := db.Get(kv.key)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			_ = x.close()
			return nil, fmt.Errorf("reading the delivery log's index: %w", err)
		}
		if len(v) == 8 {
			kv.to(binary.BigEndian.Uint64(v))
		}
		_ = closer.Close()
	}
	return x, nil
}

// use holds the index open for one operation; done releases it.
func (x *index) use() (done func(), err error) {
	x.closeMu.RLock()
	if x.closed {
		x.closeMu.RUnlock()
		return nil, errClosed
	}
	return x.closeMu.RUnlock, nil
}

func (x *index) close() error {
	x.closeMu.Lock()
	defer x.closeMu.Unlock()
	if x.closed {
		return nil
	}
	x.closed = true
	err := x.db.Close()
	x.cache.Unref()
	return err
}

// indexed returns the last sequence indexed, and a channel closed when it
// moves on.
func (x *index) indexed() (uint64, <-chan struct{}) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.last, x.progress
}

// advanced records that the index holds everything up to last.
func (x *index) advanced(last uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if last > x.last {
		x.last = last
		close(x.progress)
		x.progress = make(chan struct{})
	}
}

// reset empties the index for the stream created at created, as of
// sequence last (0: from the stream's start).
func (x *index) reset(created int64, last uint64) error {
	done, err := x.use()
	if err != nil {
		return err
	}
	defer done()
	b := x.db.NewBatch()
	defer func() { _ = b.Close() }()
	if err := b.DeleteRange([]byte{0}, []byte{0xff}, nil); err != nil {
		return err
	}
	if err := b.Set(keyStream, binary.BigEndian.AppendUint64(nil, uint64(created)), nil); err != nil {
		return err
	}
	if err := b.Set(keyLast, binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("emptying the delivery log's index: %w", err)
	}
	x.recent.clear()
	x.mu.Lock()
	x.last, x.created = last, created
	close(x.progress)
	x.progress = make(chan struct{})
	x.mu.Unlock()
	return nil
}

// entry is one log message as the index sees it.
type entry struct {
	ns, webhook, id string
	// starts: the message starts its delivery (store.LogEventOf).
	starts bool
	seq    uint64
	time   time.Time
}

// add indexes entries, in sequence order, and records last as the last
// sequence indexed (at least the last entry's: messages the index has no
// use for count as indexed too). Indexing a message again (after a crash
// lost the index's last writes) changes nothing.
//
// A delivery's sequences are found in recent, else read from the index;
// but a message that starts its delivery and is not in recent is added
// as a new delivery without reading the index. A delivery started twice
// (a fan-out done again after a crash logs its Stored record again) keeps
// its place and records when its first start is still in recent, and
// else the later start's place and records only (the reads skip the
// earlier place, and the prune forgets it).
func (x *index) add(entries []entry, last uint64) (err error) {
	done, err := x.use()
	if err != nil {
		return err
	}
	defer done()
	defer func() {
		if err != nil {
			x.recent.clear() // it may hold what was not written
		}
	}()
	b := x.db.NewBatch()
	defer func() { _ = b.Close() }()
	for _, e := range entries {
		dk := deliveryKey(e.ns, e.id, e.webhook)
		var seqs []byte
		if v, ok := x.recent.get(dk); ok {
			seqs = append(seqs, v...)
		} else if !e.starts {
			// Everything of this batch is in recent: what is not was
			// committed before, if anywhere.
			v, closer, err := x.db.Get(dk)
			switch {
			case err == nil:
				seqs = append(seqs, v...)
				_ = closer.Close()
			case !errors.Is(err, pebble.ErrNotFound):
				return fmt.Errorf("reading the delivery log's index: %w", err)
			}
		}
		if len(seqs) == 0 {
			t := binary.BigEndian.AppendUint64(nil, uint64(e.time.UnixNano()))
			if err := b.Set(webhookKey(e.ns, e.webhook, e.seq), append(t, e.id...), nil); err != nil {
				return err
			}
			if err := b.Set(namespaceKey(e.ns, e.seq), append(append(append(t, e.webhook...), '/'), e.id...), nil); err != nil {
				return err
			}
			if err := b.Set(pruneKey(e.seq), dk[len(prefixDelivery):], nil); err != nil {
				return err
			}
		} else if lastOf(seqs) >= e.seq {
			continue // indexed before
		}
		seqs = binary.AppendUvarint(seqs, e.seq)
		if err := b.Set(dk, seqs, nil); err != nil {
			return err
		}
		x.recent.put(dk, seqs)
		last = max(last, e.seq)
	}
	if err := b.Set(keyLast, binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
		return err
	}
	// Not synced: the index is a cache of the stream, and a batch lost in
	// a crash is indexed again from the stream at the next start.
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("writing the delivery log's index: %w", err)
	}
	x.advanced(last)
	return nil
}

// prune forgets the deliveries whose records are all below first (the
// stream's first sequence: older records aged out). A delivery queued
// for pruning that still has newer records is queued again by its last.
// It returns how many deliveries it forgot.
func (x *index) prune(first uint64) (int, error) {
	done, err := x.use()
	if err != nil {
		return 0, err
	}
	defer done()
	upper := pruneKey(first)
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: prefixPrune, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	b := x.db.NewBatch()
	defer func() { _ = b.Close() }()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		queued := binary.BigEndian.Uint64(it.Key()[len(prefixPrune):])
		rest := bytes.Clone(it.Value()) // <ns>/<id>/<webhook>
		dk := append(bytes.Clone(prefixDelivery), rest...)
		v, closer, err := x.db.Get(dk)
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			_ = it.Close()
			return 0, fmt.Errorf("reading the delivery log's index: %w", err)
		}
		seqs := decodeSeqs(v)
		_ = closer.Close()
		if len(seqs) == 0 {
			continue
		}
		ns, _, webhook, ok := splitDeliveryKey(rest)
		if !ok {
			continue
		}
		if !slices.Contains(seqs, queued) {
			// Queued by a start that a later start of the same delivery
			// replaced (add): its place in the lists goes.
			// The later start has its own entry in the queue.
			for _, k := range [][]byte{webhookKey(ns, webhook, queued), namespaceKey(ns, queued)} {
				if err := b.Delete(k, nil); err != nil {
					_ = it.Close()
					return 0, err
				}
			}
			continue
		}
		if l := seqs[len(seqs)-1]; l >= first {
			if err := b.Set(pruneKey(l), rest, nil); err != nil {
				_ = it.Close()
				return 0, err
			}
			continue
		}
		for _, k := range [][]byte{dk, webhookKey(ns, webhook, seqs[0]), namespaceKey(ns, seqs[0])} {
			if err := b.Delete(k, nil); err != nil {
				_ = it.Close()
				return 0, err
			}
		}
		n++
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	if err := b.DeleteRange(prefixPrune, upper, nil); err != nil {
		return 0, err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("pruning the delivery log's index: %w", err)
	}
	if n > 0 {
		x.recent.clear()
	}
	return n, nil
}

// seqsOf returns the sequences of the delivery of event id (escaped) to
// ns/webhook, ascending; nil when the index holds none.
func (x *index) seqsOf(ns, webhook, id string) ([]uint64, error) {
	done, err := x.use()
	if err != nil {
		return nil, err
	}
	defer done()
	v, closer, err := x.db.Get(deliveryKey(ns, id, webhook))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the delivery log's index: %w", err)
	}
	defer func() { _ = closer.Close() }()
	return decodeSeqs(v), nil
}

// candidate is a delivery a list may return: its WebhookConfig and event,
// its first sequence, and the time of its first record.
type candidate struct {
	webhook, id string
	first       uint64
	time        time.Time
}

// newest calls each with the deliveries of namespace ns (of WebhookConfig
// webhook when not empty) first logged at or before sequence hi, newest
// first, until each returns false or an error.
func (x *index) newest(ns, webhook string, hi uint64, each func(candidate) (bool, error)) error {
	done, err := x.use()
	if err != nil {
		return err
	}
	defer done()
	var lower, upper []byte
	if webhook != "" {
		lower = webhookKey(ns, webhook, 0)[:len(prefixWebhook)+len(ns)+len(webhook)+2]
		upper = webhookKey(ns, webhook, hi)
	} else {
		lower = namespaceKey(ns, 0)[:len(prefixNamespace)+len(ns)+1]
		upper = namespaceKey(ns, hi)
	}
	upper = append(upper, 0) // hi itself included
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }()
	for it.Last(); it.Valid(); it.Prev() {
		k, v := it.Key(), it.Value()
		if len(k) < len(lower)+8 || len(v) < 8 {
			continue
		}
		c := candidate{webhook: webhook, first: binary.BigEndian.Uint64(k[len(lower):]), time: time.Unix(0, int64(binary.BigEndian.Uint64(v)))}
		rest := string(v[8:])
		if webhook != "" {
			c.id = rest
		} else {
			i := bytes.IndexByte(v[8:], '/')
			if i < 0 {
				continue
			}
			c.webhook, c.id = rest[:i], rest[i+1:]
		}
		ok, err := each(c)
		if err != nil || !ok {
			return err
		}
	}
	return it.Error()
}

// ofEvent returns the deliveries of event id (escaped) in namespace ns, to
// every WebhookConfig, with their sequences.
func (x *index) ofEvent(ns, id string) ([]candidate, [][]uint64, error) {
	done, err := x.use()
	if err != nil {
		return nil, nil, err
	}
	defer done()
	lower := deliveryKey(ns, id, "")
	upper := append(bytes.Clone(lower[:len(lower)-1]), '/'+1)
	it, err := x.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = it.Close() }()
	var cs []candidate
	var seqs [][]uint64
	for it.First(); it.Valid(); it.Next() {
		s := decodeSeqs(it.Value())
		if len(s) == 0 {
			continue
		}
		cs = append(cs, candidate{webhook: string(it.Key()[len(lower):]), id: id, first: s[0]})
		seqs = append(seqs, s)
	}
	return cs, seqs, it.Error()
}

// metrics returns the bytes the index keeps on disk and in memory
// (memtables and block cache in use).
func (x *index) metrics() (diskBytes, memBytes int64) {
	done, err := x.use()
	if err != nil {
		return 0, 0
	}
	defer done()
	m := x.db.Metrics()
	return int64(m.DiskSpaceUsage()), int64(m.MemTable.Size) + m.BlockCache.Size
}

func deliveryKey(ns, id, webhook string) []byte {
	b := make([]byte, 0, len(prefixDelivery)+len(ns)+len(id)+len(webhook)+2)
	b = append(b, prefixDelivery...)
	b = append(append(b, ns...), '/')
	b = append(append(b, id...), '/')
	return append(b, webhook...)
}

// splitDeliveryKey splits <ns>/<id>/<webhook>.
func splitDeliveryKey(rest []byte) (ns, id, webhook string, ok bool) {
	parts := bytes.SplitN(rest, []byte{'/'}, 3)
	if len(parts) != 3 {
		return "", "", "", false
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), true
}

func webhookKey(ns, webhook string, seq uint64) []byte {
	b := make([]byte, 0, len(prefixWebhook)+len(ns)+len(webhook)+10)
	b = append(b, prefixWebhook...)
	b = append(append(b, ns...), '/')
	b = append(append(b, webhook...), '/')
	return binary.BigEndian.AppendUint64(b, seq)
}

func namespaceKey(ns string, seq uint64) []byte {
	b := make([]byte, 0, len(prefixNamespace)+len(ns)+9)
	b = append(b, prefixNamespace...)
	b = append(append(b, ns...), '/')
	return binary.BigEndian.AppendUint64(b, seq)
}

func pruneKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(bytes.Clone(prefixPrune), seq)
}

func decodeSeqs(v []byte) []uint64 {
	var out []uint64
	for len(v) > 0 {
		s, n := binary.Uvarint(v)
		if n <= 0 {
			break
		}
		out = append(out, s)
		v = v[n:]
	}
	return out
}

func lastOf(v []byte) uint64 {
	var l uint64
	for len(v) > 0 {
		s, n := binary.Uvarint(v)
		if n <= 0 {
			break
		}
		l = s
		v = v[n:]
	}
	return l
}

// quietLogger drops Pebble's informational lines and keeps its fatal ones.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("delivery log index: "+format, args...))
}
