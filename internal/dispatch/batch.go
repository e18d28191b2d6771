package dispatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/endpoint"
)

// delivery is one pending delivery of one event to one endpoint: what a
// WEBHOOK_DELIVERIES message carries, alone or in a batch.
type delivery struct {
	EventID    string
	EventType  string
	AcceptedAt string
	// Attempt is how many attempts were made before this one.
	Attempt int
	// Body is the exact body delivered: the event's envelope.
	Body []byte
}

// hdrBatch marks a message that carries several deliveries to its endpoint
// (encodeBatch); its value is how many. A message without it carries one
// delivery, described by its headers.
const hdrBatch = "Wh-Batch"

// batchFormat is the first byte of a batch message's data.
const batchFormat = 1

// Group commit bounds: a batch message carries at most this many deliveries
// (a crash hands a whole message out again, so this bounds the duplicates
// it causes; 64 already makes JetStream's cost per delivery small) and about
// this many bytes of bodies (NATS's default payload limit is 1 MiB; an event
// is at most 256 KiB by default), and an endpoint has at most this many
// batch writes waiting for JetStream's acknowledgement at once (one gave
// larger messages and higher throughput than two).
const (
	maxBatchDeliveries     = 64
	maxBatchBytes          = 512 << 10
	maxBatchWritesInFlight = 1
)

// encodeBatch encodes deliveries as a batch message's data: a format byte,
// then per delivery its attempt and four length-prefixed fields.
func encodeBatch(ds []delivery) []byte {
	n := 1
	for i := range ds {
		n += 5*binary.MaxVarintLen32 + len(ds[i].EventID) + len(ds[i].EventType) + len(ds[i].AcceptedAt) + len(ds[i].Body)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, batchFormat)
	for i := range ds {
		d := &ds[i]
		buf = binary.AppendUvarint(buf, uint64(d.Attempt))
		for _, f := range [...]string{d.EventID, d.EventType, d.AcceptedAt} {
			buf = binary.AppendUvarint(buf, uint64(len(f)))
			buf = append(buf, f...)
		}
		buf = binary.AppendUvarint(buf, uint64(len(d.Body)))
		buf = append(buf, d.Body...)
	}
	return buf
}

var errBadBatch = errors.New("malformed batch of deliveries")

// decodeBatch decodes what encodeBatch encoded; count is the hdrBatch value.
// The bodies share data's memory.
func decodeBatch(data []byte, count int) ([]delivery, error) {
	if len(data) == 0 || data[0] != batchFormat {
		return nil, fmt.Errorf("%w: unknown format", errBadBatch)
	}
	if count <= 0 || count > len(data) {
		return nil, fmt.Errorf("%w: count %d", errBadBatch, count)
	}
	data = data[1:]
	field := func() ([]byte, error) {
		l, n := binary.Uvarint(data)
		if n <= 0 || l > uint64(len(data)-n) {
			return nil, fmt.Errorf("%w: truncated", errBadBatch)
		}
		f := data[n : n+int(l) : n+int(l)]
		data = data[n+int(l):]
		return f, nil
	}
	ds := make([]delivery, count)
	for i := range ds {
		attempt, n := binary.Uvarint(data)
		if n <= 0 || attempt > 1<<20 {
			return nil, fmt.Errorf("%w: truncated", errBadBatch)
		}
		data = data[n:]
		var fs [4][]byte
		for j := range fs {
			f, err := field()
			if err != nil {
				return nil, err
			}
			fs[j] = f
		}
		ds[i] = delivery{Attempt: int(attempt), EventID: string(fs[0]), EventType: string(fs[1]), AcceptedAt: string(fs[2]), Body: fs[3]}
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after %d deliveries", errBadBatch, len(data), count)
	}
	return ds, nil
}

// deliveriesOf returns the deliveries a stored message carries.
func deliveriesOf(h nats.Header, data []byte) ([]delivery, error) {
	if b := h.Get(hdrBatch); b != "" {
		count, err := strconv.Atoi(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %s header %q", errBadBatch, hdrBatch, b)
		}
		return decodeBatch(data, count)
	}
	attempt, _ := strconv.Atoi(h.Get(hdrAttempt))
	return []delivery{{
		EventID: h.Get(hdrEventID), EventType: h.Get(hdrEventType), AcceptedAt: h.Get(hdrAcceptedAt),
		Attempt: attempt, Body: data,
	}}, nil
}

// deliveryMsg is one delivery stored as a message of its own.
func deliveryMsg(ns, name string, uid types.UID, d *delivery) *nats.Msg {
	msg := nats.NewMsg(deliverSubject(ns, name))
	msg.Data = d.Body
	msg.Header.Set(hdrEventID, d.EventID)
	msg.Header.Set(hdrEventType, d.EventType)
	msg.Header.Set(hdrAcceptedAt, d.AcceptedAt)
	msg.Header.Set(hdrEndpoint, name)
	msg.Header.Set(hdrEndpointUID, string(uid))
	msg.Header.Set(hdrAttempt, strconv.Itoa(d.Attempt))
	return msg
}

// batchMsg is the message that stores ds, all to one endpoint: a message of
// its own for a single delivery, a batch message for more.
func batchMsg(ns, name string, uid types.UID, ds []delivery) *nats.Msg {
	if len(ds) == 1 {
		return deliveryMsg(ns, name, uid, &ds[0])
	}
	msg := nats.NewMsg(deliverSubject(ns, name))
	msg.Data = encodeBatch(ds)
	msg.Header.Set(hdrBatch, strconv.Itoa(len(ds)))
	msg.Header.Set(hdrEndpoint, name)
	msg.Header.Set(hdrEndpointUID, string(uid))
	return msg
}

// batcher stores the deliveries Enqueue accepts with as few JetStream writes
// as it can (group commit). Per endpoint, a delivery is written at once when
// fewer than maxBatchWritesInFlight writes are waiting for their
// acknowledgement; otherwise it joins the next write, which starts as soon
// as one of those is acknowledged. Under light load every delivery is a
// write of its own; under heavy load one write stores many, and JetStream
// stores, hands out and acknowledges one message for all of them.
//
// When a write carried several deliveries (requests overlap: the endpoint is
// busy), the next one waits up to delay for more to join it, or until it is
// full, like PostgreSQL's commit_delay with commit_siblings: up to a
// millisecond more per accepted event under load buys messages more than
// twice as large, which is less CPU per event and so more events per second. A
// write after one that carried a single delivery never waits.
type batcher struct {
	js     jetstream.JetStream
	delay  time.Duration
	mu     sync.Mutex
	queues map[types.UID]*batchQueue
}

// batchQueue is one endpoint's writes: writing are in flight, waiting are not
// started yet (only the last one still takes deliveries).
type batchQueue struct {
	ns, name string
	uid      types.UID
	writing  int
	waiting  []*batchWrite
	// full is signalled when the next write has become full, ending a wait
	// for more deliveries.
	full chan struct{}
}

// batchWrite is one message's worth of deliveries; done is closed once it was
// stored (err nil) or failed.
type batchWrite struct {
	items []delivery
	size  int
	done  chan struct{}
	err   error
}

// newBatcher returns a batcher whose writes after a write of several
// deliveries wait up to delay for more (0: never).
func newBatcher(js jetstream.JetStream, delay time.Duration) *batcher {
	return &batcher{js: js, delay: delay, queues: map[types.UID]*batchQueue{}}
}

// fullLocked reports whether the next write of q can take no more deliveries.
func (q *batchQueue) fullLocked() bool {
	return len(q.waiting) > 1 || len(q.waiting) == 1 && len(q.waiting[0].items) >= maxBatchDeliveries
}

// add queues deliveries to one endpoint and returns the writes that carry
// them; each is done when its message was stored or failed.
func (b *batcher) add(ns string, ep *endpoint.Endpoint, ds []delivery) []*batchWrite {
	var ws []*batchWrite
	var start []*batchWrite
	b.mu.Lock()
	q := b.queues[ep.UID]
	if q == nil {
		q = &batchQueue{ns: ns, name: ep.Name, uid: ep.UID, full: make(chan struct{}, 1)}
		b.queues[ep.UID] = q
	}
	for i := range ds {
		var w *batchWrite
		if n := len(q.waiting); n > 0 && len(q.waiting[n-1].items) < maxBatchDeliveries && q.waiting[n-1].size+len(ds[i].Body) <= maxBatchBytes {
			w = q.waiting[n-1]
		} else {
			w = &batchWrite{done: make(chan struct{})}
			q.waiting = append(q.waiting, w)
		}
		w.items = append(w.items, ds[i])
		w.size += len(ds[i].Body)
		if len(ws) == 0 || ws[len(ws)-1] != w {
			ws = append(ws, w)
		}
	}
	for q.writing < maxBatchWritesInFlight && len(q.waiting) > 0 {
		start = append(start, q.waiting[0])
		q.waiting = q.waiting[1:]
		q.writing++
	}
	if q.fullLocked() {
		select {
		case q.full <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
	for _, w := range start {
		go b.write(q, w)
	}
	return ws
}

// write stores w, then whatever waits behind it, until the queue is empty.
func (b *batcher) write(q *batchQueue, w *batchWrite) {
	for {
		w.err = b.store(q, w.items)
		close(w.done)
		if b.delay > 0 && len(w.items) > 1 {
			b.linger(q)
		}
		b.mu.Lock()
		if len(q.waiting) == 0 {
			q.writing--
			if q.writing == 0 {
				delete(b.queues, q.uid)
			}
			b.mu.Unlock()
			return
		}
		w = q.waiting[0]
		q.waiting = q.waiting[1:]
		b.mu.Unlock()
	}
}

// linger waits up to b.delay for the next write of q to fill.
func (b *batcher) linger(q *batchQueue) {
	select {
	case <-q.full: // from an earlier write
	default:
	}
	b.mu.Lock()
	full := q.fullLocked()
	b.mu.Unlock()
	if full {
		return
	}
	timer := time.NewTimer(b.delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-q.full:
	}
}

func (b *batcher) store(q *batchQueue, ds []delivery) error {
	f, err := b.js.PublishMsgAsync(batchMsg(q.ns, q.name, q.uid, ds))
	if err != nil {
		return err
	}
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	}
}
