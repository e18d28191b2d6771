package delivery

import (
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/store"
)

const (
	// logHold is how long an accepted delivery's Stored record waits for
	// the delivery's first attempt, so that the two go into the log as one
	// message: most deliveries are attempted within milliseconds, and one
	// message a delivery instead of two is most of what keeping the log
	// costs the delivery path. A delivery not attempted by then (a paused
	// or busy endpoint, another replica's attempt) has its Stored record
	// written alone.
	logHold = 250 * time.Millisecond
	// logHeldMax and logHeldMaxBytes bound the Stored records waiting:
	// past them a record is written at once.
	logHeldMax      = 8192
	logHeldMaxBytes = 16 << 20
)

// deliveryLog writes the delivery log (store.StreamDeliveryLog): a Stored
// record for every delivery when it is stored, an Attempt record for every
// outcome. Its writes are asynchronous and not waited for: the log is a
// record of the delivery path, not part of it, so a write it loses (the
// store failed at that moment, or the process was killed while a Stored
// record waited for its attempt) costs a line of the log, never a
// delivery, and keeping it adds no wait to accepting or delivering an
// event. A nil *deliveryLog (the log turned off) writes nothing.
type deliveryLog struct {
	nc      *nats.Conn
	bodyCap int
	log     logr.Logger
	hold    time.Duration

	// mu orders the writes of one delivery: a Stored record that waits is
	// written (alone or with its attempt) under mu, and an attempt that
	// finds no record waiting is written after it.
	mu        sync.Mutex
	held      map[heldKey]*heldStored
	queue     []heldKey // in the order they were held (their deadlines' order)
	heldBytes int
	timer     *time.Timer
	closed    bool
}

type heldKey struct{ ns, name, eventID string }

type heldStored struct {
	records  []store.LogRecord // one, or more for an event stored again meanwhile
	deadline time.Time
	bytes    int
}

// newDeliveryLog returns the log writer, or nil when the store keeps no log.
func newDeliveryLog(s *store.Store, bodyCap int, log logr.Logger) *deliveryLog {
	if !s.DeliveryLog() {
		return nil
	}
	if bodyCap <= 0 {
		bodyCap = store.DefaultDeliveryLogBodyBytes
	}
	return &deliveryLog{nc: s.Conn(), bodyCap: bodyCap, log: log, hold: logHold, held: map[heldKey]*heldStored{}}
}

// stored records ds, all to endpoint ns/name, as stored; origin is "" for
// accepted events, "Replay" or "Resend". Accepted events' records wait for
// their first attempt (logHold); the others are written at once.
func (l *deliveryLog) stored(ns, name string, uid types.UID, ds []store.Delivery, origin string) {
	if l == nil || len(ds) == 0 {
		return
	}
	rs := make([]store.LogRecord, len(ds))
	for i := range ds {
		rs[i] = store.StoredRecord(uid, &ds[i], l.bodyCap, origin)
	}
	if origin != "" || l.hold <= 0 {
		l.publish(ns, name, rs)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var now []store.LogRecord
	deadline := time.Now().Add(l.hold)
	for _, r := range rs {
		k := heldKey{ns, name, r.EventID}
		if h := l.held[k]; h != nil {
			h.records = append(h.records, r)
			h.bytes += len(r.Body)
			l.heldBytes += len(r.Body)
			continue
		}
		if l.closed || len(l.held) >= logHeldMax || l.heldBytes+len(r.Body) > logHeldMaxBytes {
			now = append(now, r)
			continue
		}
		l.held[k] = &heldStored{records: []store.LogRecord{r}, deadline: deadline, bytes: len(r.Body)}
		l.heldBytes += len(r.Body)
		l.queue = append(l.queue, k)
	}
	if len(now) > 0 {
		l.publish(ns, name, now)
	}
	if l.timer == nil && len(l.queue) > 0 {
		l.timer = time.AfterFunc(l.hold, l.flushDue)
	}
}

// attempts records the outcomes ocs, all of one endpoint, each with its
// delivery's Stored record when that still waits.
func (l *deliveryLog) attempts(ocs []*store.Outcome) {
	if l == nil || len(ocs) == 0 {
		return
	}
	ns, name := ocs[0].Namespace, ocs[0].Name
	rs := make([]store.LogRecord, 0, len(ocs)+1)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, oc := range ocs {
		k := heldKey{ns, name, oc.EventID}
		if h := l.held[k]; h != nil {
			rs = append(rs, h.records...)
			l.heldBytes -= h.bytes
			delete(l.held, k) // its key stays in queue until its deadline and is skipped then
		}
		rs = append(rs, store.AttemptRecord(oc))
	}
	l.publish(ns, name, rs)
}

// flushDue writes the Stored records whose wait is over, and sets the
// timer for the next.
func (l *deliveryLog) flushDue() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	l.flushLocked(time.Now())
	if len(l.queue) > 0 && !l.closed {
		l.timer = time.AfterFunc(max(time.Until(l.held[l.queue[0]].deadline), time.Millisecond), l.flushDue)
	}
}

// flushLocked writes the records waiting whose deadline is not after t
// (every one for a zero t) and drops the queue's keys already written.
func (l *deliveryLog) flushLocked(t time.Time) {
	type endpoint struct{ ns, name string }
	var order []endpoint
	byEndpoint := map[endpoint][]store.LogRecord{}
	i := 0
	for ; i < len(l.queue); i++ {
		k := l.queue[i]
		h := l.held[k]
		if h == nil {
			continue // written with its attempt
		}
		if !t.IsZero() && h.deadline.After(t) {
			break
		}
		e := endpoint{k.ns, k.name}
		if _, ok := byEndpoint[e]; !ok {
			order = append(order, e)
		}
		byEndpoint[e] = append(byEndpoint[e], h.records...)
		l.heldBytes -= h.bytes
		delete(l.held, k)
	}
	l.queue = l.queue[i:]
	if len(l.queue) == 0 {
		l.queue = nil // let the array go
	}
	for _, e := range order {
		l.publish(e.ns, e.name, byEndpoint[e])
	}
}

// close writes every record waiting and every later one at once.
func (l *deliveryLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.flushLocked(time.Time{})
}

func (l *deliveryLog) publish(ns, name string, rs []store.LogRecord) {
	var err error
	for _, msg := range store.DeliveryLogMsgs(ns, name, rs) {
		// A plain publish: the stream stores it without acknowledging
		// it, which no writer of the log waits for.
		if err = l.nc.PublishMsg(msg); err != nil {
			break
		}
	}
	if err != nil {
		l.log.V(1).Info("Writing the delivery log failed; the records are lost from the log (not from delivery)", "namespace", ns, "name", name, "records", len(rs), "error", err.Error())
	}
}
