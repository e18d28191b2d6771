package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/store"
)

// Reader reads the delivery log, through an index of it on disk that it
// builds by following the log's stream (Start). Every manager process
// that serves the API runs its own: each has a complete index, whichever
// process wrote the records, with the embedded store or an external NATS.
type Reader struct {
	js   jetstream.JetStream
	nc   *nats.Conn
	idx  *index
	opts Options
	// reads counts the messages read (direct get answers), for tests.
	reads atomic.Int64
	// fed holds what the writer handed over (Options.Fed), or is nil.
	fed *fedQueue
	// readBackCount counts the messages the fed index read back from the
	// stream, for tests.
	readBackCount atomic.Int64
}

// Options configures a Reader.
type Options struct {
	// Dir holds the index (created if missing). It is a cache of the
	// stream: removing it costs only the time to build it again.
	Dir string
	// CacheBytes is the index's block cache (default 8 MiB); MemTableBytes
	// each of its memtables (default 4 MiB, at most two in memory).
	CacheBytes, MemTableBytes int64
	// CatchUpWait bounds how long a read waits for the index to hold
	// every record the stream held when the read began (default
	// DefaultCatchUpWait). Past it the read answers as of what the index
	// holds, and says so by its resource version.
	CatchUpWait time.Duration
	// PruneInterval is how often the index forgets the deliveries whose
	// records all aged out of the stream (default a minute).
	PruneInterval time.Duration
	// Logger reports the index's troubles.
	Logger logr.Logger
	// Fed says this process writes every record of the log (the embedded
	// store) and hands each to Logged: the index is then built from what
	// is handed over, and the stream is read only where nothing was
	// (fed.go). Otherwise (several replicas share an external NATS) the
	// index follows the stream, reading every message's headers.
	Fed bool
}

// DefaultCatchUpWait is Options.CatchUpWait's default: the index follows
// the stream within milliseconds; a read waits this long for it at most.
const DefaultCatchUpWait = 3 * time.Second

// Open opens (or creates) the index in opts.Dir and returns a reader of
// the log in js. Start keeps the index up to date; Close closes it.
func Open(js jetstream.JetStream, opts Options) (*Reader, error) {
	if opts.Dir == "" {
		return nil, errors.New("the delivery log's index needs a directory")
	}
	if opts.CatchUpWait <= 0 {
		opts.CatchUpWait = DefaultCatchUpWait
	}
	if opts.PruneInterval <= 0 {
		opts.PruneInterval = time.Minute
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	idx, err := openIndex(indexOptions{dir: opts.Dir, cacheBytes: opts.CacheBytes, memTableBytes: opts.MemTableBytes})
	if err != nil {
		return nil, err
	}
	r := &Reader{js: js, nc: js.Conn(), idx: idx, opts: opts}
	if opts.Fed {
		r.fed = newFedQueue()
	}
	return r, nil
}

// Close closes the index; reads after it fail.
func (r *Reader) Close() error { return r.idx.close() }

// ErrExpired is returned for a resource version older than what the log
// still holds.
var ErrExpired = errors.New("the delivery log no longer holds that resource version")

// stream returns the log stream's state.
func (r *Reader) stream(ctx context.Context) (*jetstream.StreamInfo, error) {
	s, err := r.js.Stream(ctx, store.StreamDeliveryLog)
	if err != nil {
		return nil, fmt.Errorf("reading the delivery log: %w", err)
	}
	return s.CachedInfo(), nil
}

// Bounds returns the log's first stream sequence and the last one a read
// sees: the stream's last, once the index holds it. A read that follows a
// write sees it (read-your-writes): Bounds waits for the index to catch
// up with the stream as it is now, up to Options.CatchUpWait; past that,
// last is what the index holds.
func (r *Reader) Bounds(ctx context.Context) (first, last uint64, err error) {
	info, err := r.stream(ctx)
	if err != nil {
		return 0, 0, err
	}
	first = info.State.FirstSeq
	return first, r.settle(ctx, first, info.State.LastSeq), nil
}

// settle waits until the index holds every record up to target (or the
// stream starts after target), up to Options.CatchUpWait, and returns
// target, or the last sequence the index holds when it did not get there.
func (r *Reader) settle(ctx context.Context, first, target uint64) uint64 {
	indexed := func() (uint64, <-chan struct{}) {
		last, progress := r.idx.indexed()
		if first > 0 {
			last = max(last, first-1) // before the stream's start: nothing to index
		}
		return last, progress
	}
	if last, _ := indexed(); last >= target {
		return target
	}
	timeout := time.NewTimer(r.opts.CatchUpWait)
	defer timeout.Stop()
	for {
		last, progress := indexed()
		if last >= target {
			return target
		}
		select {
		case <-progress:
		case <-timeout.C:
			return last
		case <-ctx.Done():
			return last
		}
	}
}

// Get folds the records of the delivery of event eventID to WebhookConfig
// ns/webhook with sequences up to upTo (Bounds' last); it returns nil
// when the log holds none.
func (r *Reader) Get(ctx context.Context, ns, webhook, eventID string, upTo uint64) (*Delivery, error) {
	upTo = r.settle(ctx, 0, upTo)
	ds, err := r.load(ctx, ns, []candidate{{webhook: webhook, id: store.EscapeEventID(eventID)}}, nil, 0, upTo)
	if err != nil || len(ds) == 0 {
		return nil, err
	}
	return ds[0], nil
}

// load reads and folds the deliveries cs of namespace ns, with their
// records from first to upTo; seqs, when not nil, holds each one's
// sequences (else they are looked up). A delivery of which nothing is
// left is left out; the others keep cs's order.
func (r *Reader) load(ctx context.Context, ns string, cs []candidate, seqs [][]uint64, first, upTo uint64) ([]*Delivery, error) {
	var want []uint64
	owner := map[uint64]int{}
	firsts := make([]uint64, len(cs))
	for i, c := range cs {
		var s []uint64
		if seqs != nil {
			s = seqs[i]
		} else {
			var err error
			if s, err = r.idx.seqsOf(ns, c.webhook, c.id); err != nil {
				return nil, err
			}
		}
		firsts[i] = c.first
		if firsts[i] == 0 && len(s) > 0 {
			firsts[i] = s[0]
		}
		if len(s) > 0 && s[0] != firsts[i] {
			// A place in the lists that a later start of the same
			// delivery replaced (index.add): listed at that one.
			continue
		}
		for _, q := range s {
			if q >= first && q <= upTo {
				want = append(want, q)
				owner[q] = i
			}
		}
	}
	msgs, err := r.fetch(ctx, want)
	if err != nil {
		return nil, err
	}
	byDelivery := make([][]rawMsg, len(cs))
	for _, m := range msgs {
		i := owner[m.seq]
		byDelivery[i] = append(byDelivery[i], m)
	}
	out := make([]*Delivery, 0, len(cs))
	for i := range cs {
		if len(byDelivery[i]) == 0 {
			continue
		}
		if d := fold(ns, byDelivery[i], firsts[i]); d != nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// Query selects the deliveries of a Page.
type Query struct {
	// Namespace is required; Webhook and EventID narrow the read to that
	// WebhookConfig's or that event's deliveries when not empty.
	Namespace, Webhook, EventID string
	// First is the log's first sequence (Bounds); UpTo the list's
	// resource version: later records are not read.
	First, UpTo uint64
	// Below, when not 0, keeps the deliveries first stored before that
	// sequence (a continued list).
	Below uint64
	// Limit, when above 0, is the most deliveries returned.
	Limit int
	// Since, when set, keeps the deliveries first accepted at or after it
	// (their creationTimestamp); the read stops where the log is older.
	Since time.Time
	// Match, when not nil, keeps the deliveries it is true for.
	Match func(*Delivery) bool
}

// ClockSkew is how far the clocks of the manager that accepted an event
// and of the NATS server that stored its records may be apart: a list
// with Since reads that much further back.
const ClockSkew = time.Minute

// pageChunk is how many deliveries a Page without a limit reads first;
// maxChunk the most a Page reads at once.
const (
	pageChunk = 256
	maxChunk  = 2048
)

// Page returns the deliveries q selects, newest first (by the sequence of
// their first record in the log), and whether there are more after them.
//
// The index gives the selected deliveries newest first (of one
// WebhookConfig, of one event, or of the namespace) and each one's
// sequences; the records are then read by sequence. The cost grows with
// the deliveries read, not with the log: a page of one WebhookConfig reads
// its newest Limit+1 deliveries (more when Match leaves some out), however
// long the log.
func (r *Reader) Page(ctx context.Context, q Query) ([]*Delivery, bool, error) {
	first := max(q.First, 1)
	upTo := r.settle(ctx, first, q.UpTo)
	hi := upTo
	if q.Below > 0 {
		hi = min(hi, q.Below-1)
	}
	if hi == 0 {
		return nil, false, nil
	}
	var out []*Delivery
	more := false
	// take keeps the deliveries ds (newest first) that q selects; it
	// returns false once the page is full.
	take := func(ds []*Delivery) bool {
		for _, d := range ds {
			if !q.Since.IsZero() && d.Object.CreationTimestamp.Time.Before(q.Since) {
				continue
			}
			if q.Match != nil && !q.Match(d) {
				continue
			}
			if q.Limit > 0 && len(out) == q.Limit {
				more = true
				return false
			}
			out = append(out, d)
		}
		return true
	}
	if q.EventID != "" {
		cs, seqs, err := r.idx.ofEvent(q.Namespace, store.EscapeEventID(q.EventID))
		if err != nil {
			return nil, false, err
		}
		var keep []int
		for i, c := range cs {
			if (q.Webhook == "" || c.webhook == q.Webhook) && c.first <= hi {
				keep = append(keep, i)
			}
		}
		slices.SortFunc(keep, func(a, b int) int { return -cmpUint(cs[a].first, cs[b].first) })
		sel, selSeqs := make([]candidate, len(keep)), make([][]uint64, len(keep))
		for k, i := range keep {
			sel[k], selSeqs[k] = cs[i], seqs[i]
		}
		ds, err := r.load(ctx, q.Namespace, sel, selSeqs, first, upTo)
		if err != nil {
			return nil, false, err
		}
		take(ds)
		return out, more, nil
	}
	// The deliveries are read in chunks: first what the page needs (and
	// one more, which says whether there are more), then, when Match left
	// some out, chunks twice as large each time, up to maxChunk.
	var pending []candidate
	full := false
	chunk := pageChunk
	if q.Limit > 0 {
		chunk = q.Limit + 1
	}
	flush := func() error {
		ds, err := r.load(ctx, q.Namespace, pending, nil, first, upTo)
		pending = pending[:0]
		if err != nil {
			return err
		}
		full = !take(ds)
		chunk = min(2*chunk, max(maxChunk, chunk))
		return nil
	}
	err := r.idx.newest(q.Namespace, q.Webhook, hi, func(c candidate) (bool, error) {
		if !q.Since.IsZero() && c.time.Before(q.Since.Add(-ClockSkew)) {
			// Older deliveries were accepted before Since.
			return false, nil
		}
		pending = append(pending, c)
		if len(pending) < chunk {
			return true, nil
		}
		if err := flush(); err != nil {
			return false, err
		}
		return !full, nil
	})
	if err == nil && !full && len(pending) > 0 {
		err = flush()
	}
	if err != nil {
		return nil, false, err
	}
	return out, more, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fold folds the records of one delivery, oldest first; firstSeq is its
// place in lists.
func fold(ns string, msgs []rawMsg, firstSeq uint64) *Delivery {
	f := NewFolder(ns)
	var d *Delivery
	for _, m := range msgs {
		if got := foldMsg(f, m.subject, m.seq, m.data, nil); got != nil {
			d = got
		}
	}
	if d != nil {
		d.FirstSeq = firstSeq
	}
	return d
}

// Scan folds every delivery of namespace ns (of one WebhookConfig when
// webhook is not empty) with records up to upTo, and returns them newest
// first and the folder for going on from upTo (Follow).
func (r *Reader) Scan(ctx context.Context, ns, webhook string, upTo uint64) ([]*Delivery, *Folder, error) {
	info, err := r.stream(ctx)
	if err != nil {
		return nil, nil, err
	}
	ds, _, err := r.Page(ctx, Query{Namespace: ns, Webhook: webhook, First: info.State.FirstSeq, UpTo: upTo})
	if err != nil {
		return nil, nil, err
	}
	f := NewFolder(ns)
	for _, d := range ds {
		f.byKey[ns+"/"+d.Object.Name] = d
	}
	return ds, f, nil
}

// foldMsg folds one log message (the records of one delivery) into f,
// calls touched (when not nil) once for the delivery it changed, created
// when a record of it created the delivery, and returns the delivery (nil
// when the message holds no record).
func foldMsg(f *Folder, subject string, seq uint64, data []byte, touched func(d *Delivery, created bool)) *Delivery {
	key, ok := store.EndpointOfLogSubject(subject)
	if !ok {
		return nil
	}
	rs, err := store.DecodeLogRecords(data)
	if err != nil {
		return nil
	}
	var d *Delivery
	created := false
	for i := range rs {
		var c bool
		d, c = f.apply(key.Namespace, key.Name, seq, &rs[i])
		created = created || c
	}
	if d != nil && touched != nil {
		touched(d, created)
	}
	return d
}

// Follow folds the records of namespace ns (of one WebhookConfig when
// webhook is not empty) stored after sequence after into f, calling
// touched for every delivery a record changed, until ctx ends. A delivery
// f does not hold yet is read from the log first (its records up to the
// new one, found through the index), and loaded is called with it before
// the new record is folded.
func (r *Reader) Follow(ctx context.Context, ns, webhook string, after uint64, f *Folder, loaded func(d *Delivery), touched func(d *Delivery, created bool)) error {
	cons, err := r.js.OrderedConsumer(ctx, store.StreamDeliveryLog, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{store.DeliveryLogFilter(ns, webhook)},
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
		seq := meta.Sequence.Stream
		key, ok := store.EndpointOfLogSubject(m.Subject())
		id, _ := store.LogEventOf(m.Headers())
		if ok && id != "" && f.byKey[ns+"/"+key.Name+"."+id] == nil && seq > 1 {
			upTo := r.settle(ctx, 0, seq-1)
			ds, err := r.load(ctx, ns, []candidate{{webhook: key.Name, id: id}}, nil, 0, upTo)
			if err != nil {
				if ctx.Err() != nil {
					return nil //nolint:nilerr // the watch was stopped: not an error of the log
				}
				return err
			}
			if len(ds) > 0 {
				f.byKey[ns+"/"+ds[0].Object.Name] = ds[0]
				if loaded != nil {
					loaded(ds[0])
				}
			}
		}
		foldMsg(f, m.Subject(), seq, m.Data(), touched)
	}
}

// IndexBytes returns the bytes the index keeps on disk and in memory (its
// memtables and the block cache in use).
func (r *Reader) IndexBytes() (diskBytes, memBytes int64) { return r.idx.metrics() }
