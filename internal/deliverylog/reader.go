package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/wablast/webhook-operator/internal/store"
)

// Reader reads the delivery log.
type Reader struct {
	js jetstream.JetStream
	nc *nats.Conn
	// reads counts the messages read (direct get answers), for tests.
	reads atomic.Int64
}

// NewReader returns a reader of the log in js.
func NewReader(js jetstream.JetStream) *Reader { return &Reader{js: js, nc: js.Conn()} }

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

// Get folds the records of the delivery of event eventID to WebhookConfig
// ns/webhook with sequences up to upTo; it returns nil when the log holds
// none. It reads that delivery's subject only.
func (r *Reader) Get(ctx context.Context, ns, webhook, eventID string, upTo uint64) (*Delivery, error) {
	f := NewFolder(ns)
	var d *Delivery
	err := r.scan(ctx, store.DeliveryLogSubject(ns, webhook, eventID), 1, upTo, 0, func(m rawMsg) bool {
		if got := foldMsg(f, m.subject, m.seq, m.data, nil); got != nil {
			d = got
		}
		return true
	})
	return d, err
}

// Query selects the deliveries of a Page.
type Query struct {
	// Namespace is required; Webhook and EventID narrow the read to that
	// WebhookConfig's or that event's subjects when not empty.
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

// firstWindow is how many sequences a Page reads first; each further
// window, older, is twice the one before.
const firstWindow = 1024

// Page returns the deliveries q selects, newest first (by the sequence of
// their first record in the log), and whether there are more after them.
//
// It reads the log backwards in windows of sequences from q's upper bound,
// each twice as long as the one before, until it has Limit deliveries (and
// knows whether one more exists), the log's start, or, with Since, records
// older than Since. Every delivery seen in a window is looked up by its
// subject: its first record tells whether the delivery starts in the
// windows read (and is then complete, its records all read) or earlier.
// The cost grows with the records of the selected subjects in the windows
// read, not with the log: a page of one WebhookConfig reads about its
// newest Limit deliveries, however long the log.
func (r *Reader) Page(ctx context.Context, q Query) ([]*Delivery, bool, error) {
	hi := q.UpTo
	if q.Below > 0 {
		hi = min(hi, q.Below-1)
	}
	first := max(q.First, 1)
	if hi < first {
		return nil, false, nil
	}
	filter := store.DeliveryLogFilter(q.Namespace, q.Webhook, q.EventID)
	// The first sequence of each subject seen, and the records read of
	// those that start before the windows read so far.
	firstOf := map[string]uint64{}
	held := map[string][]rawMsg{}
	var out []*Delivery
	top, window, prev := hi, uint64(firstWindow), -1
	if q.Limit > 0 {
		window = max(256, 4*uint64(q.Limit+1))
	}
	for {
		lo := first
		if top >= first+window {
			lo = top - window + 1
		}
		// A window is twice the one before it: expect twice what it held.
		expect := 0
		if prev >= 0 {
			expect = 2*prev + 16
		}
		var chunk []rawMsg
		if err := r.scan(ctx, filter, lo, top, expect, func(m rawMsg) bool {
			chunk = append(chunk, m)
			return true
		}); err != nil {
			return nil, false, err
		}
		// A window's records go before those of the newer windows. A
		// delivery that starts in this window starts at its first record
		// here: taking the subjects by that, newest first, gives the
		// deliveries that start here in list order.
		bySubject := map[string][]rawMsg{}
		var subjects []string
		for _, m := range chunk {
			if _, ok := bySubject[m.subject]; !ok {
				subjects = append(subjects, m.subject)
			}
			bySubject[m.subject] = append(bySubject[m.subject], m)
		}
		slices.Reverse(subjects)
		// The first record of each subject not seen before, looked up
		// concurrently: the look-ups wait on the store, not on each other.
		var unknown []string
		for _, s := range subjects {
			held[s] = append(bySubject[s], held[s]...)
			if _, ok := firstOf[s]; !ok {
				unknown = append(unknown, s)
			}
		}
		firsts := make([]uint64, len(unknown))
		if err := concurrently(ctx, len(unknown), func(ctx context.Context, i int) error {
			m, found, err := r.next(ctx, unknown[i], first)
			if found {
				firsts[i] = m.seq
			}
			return err
		}); err != nil {
			return nil, false, err
		}
		for i, s := range unknown {
			firstOf[s] = firsts[i] // 0: aged out since the window was read
		}
		var complete []string
		for _, s := range subjects {
			switch f := firstOf[s]; {
			case f == 0:
				delete(held, s)
			case f >= lo:
				complete = append(complete, s)
			}
			// Otherwise it starts in an older window.
		}
		if hi < q.UpTo {
			// Records after the page's bound, up to the list's resource
			// version, belong to the deliveries too.
			tails := make([][]rawMsg, len(complete))
			if err := concurrently(ctx, len(complete), func(ctx context.Context, i int) error {
				var err error
				tails[i], err = r.after(ctx, complete[i], hi, q.UpTo)
				return err
			}); err != nil {
				return nil, false, err
			}
			for i, s := range complete {
				held[s] = append(held[s], tails[i]...)
			}
		}
		for _, s := range complete {
			msgs := held[s]
			delete(held, s)
			d := fold(q.Namespace, msgs, firstOf[s])
			if d == nil || !q.Since.IsZero() && d.Object.CreationTimestamp.Time.Before(q.Since) {
				continue
			}
			if q.Match != nil && !q.Match(d) {
				continue
			}
			if q.Limit > 0 && len(out) == q.Limit {
				return out, true, nil
			}
			out = append(out, d)
		}
		if lo <= first {
			return out, false, nil
		}
		if !q.Since.IsZero() && len(chunk) > 0 && chunk[0].time.Before(q.Since.Add(-ClockSkew)) {
			// Older records are of deliveries accepted before Since.
			return out, false, nil
		}
		top = lo - 1
		window *= 2
		prev = len(chunk)
	}
}

// lookups is how many direct gets a Page has in flight at once.
const lookups = 32

// concurrently runs f for 0..n-1, at most lookups at a time, and returns
// the first error.
func concurrently(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(lookups)
	for i := range n {
		g.Go(func() error { return f(ctx, i) })
	}
	return g.Wait()
}

// after returns the records of subject with sequences after from, up to upTo.
func (r *Reader) after(ctx context.Context, subject string, from, upTo uint64) ([]rawMsg, error) {
	var out []rawMsg
	for seq := from + 1; seq <= upTo; {
		m, found, err := r.next(ctx, subject, seq)
		if err != nil {
			return nil, err
		}
		if !found || m.seq > upTo {
			break
		}
		out = append(out, m)
		seq = m.seq + 1
	}
	return out, nil
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
	first, _, err := r.Bounds(ctx)
	if err != nil {
		return nil, nil, err
	}
	ds, _, err := r.Page(ctx, Query{Namespace: ns, Webhook: webhook, First: first, UpTo: upTo})
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

// nameOfSubject is the WebhookDelivery name of a log subject's delivery.
func nameOfSubject(subject string) (string, bool) {
	key, ok := store.EndpointOfLogSubject(subject)
	if !ok {
		return "", false
	}
	return key.Name + "." + subject[strings.LastIndexByte(subject, '.')+1:], true
}

// Follow folds the records of namespace ns (of one WebhookConfig when
// webhook is not empty) stored after sequence after into f, calling
// touched for every delivery a record changed, until ctx ends. A delivery
// f does not hold yet is read from the log first (its records up to the
// new one), and loaded is called with it before the new record is folded.
func (r *Reader) Follow(ctx context.Context, ns, webhook string, after uint64, f *Folder, loaded func(d *Delivery), touched func(d *Delivery, created bool)) error {
	cons, err := r.js.OrderedConsumer(ctx, store.StreamDeliveryLog, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{store.DeliveryLogFilter(ns, webhook, "")},
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
		if name, ok := nameOfSubject(m.Subject()); ok && f.byKey[ns+"/"+name] == nil {
			var d *Delivery
			if err := r.scan(ctx, m.Subject(), 1, seq-1, 0, func(p rawMsg) bool {
				if got := foldMsg(f, p.subject, p.seq, p.data, nil); got != nil {
					d = got
				}
				return true
			}); err != nil {
				if ctx.Err() != nil {
					return nil //nolint:nilerr // the watch was stopped: not an error of the log
				}
				return err
			}
			if d != nil && loaded != nil {
				loaded(d)
			}
		}
		foldMsg(f, m.Subject(), seq, m.Data(), touched)
	}
}
