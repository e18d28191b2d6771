package delivery

import (
	"context"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/store"
)

// deliveryLog writes the delivery log (store.StreamDeliveryLog): a Stored
// record for every delivery when it is stored, an Attempt record for every
// outcome. Its writes are asynchronous and not waited for: the log is a
// record of the delivery path, not part of it, so a write it loses (the
// store failed at that moment) costs a line of the log, never a delivery,
// and keeping it adds no wait to accepting or delivering an event. A nil
// *deliveryLog (the log turned off) writes nothing.
type deliveryLog struct {
	js      jetstream.JetStream
	bodyCap int
	log     logr.Logger
	// written, when set (FeedDeliveryLog), is handed every message the
	// log wrote, with its stream sequence, once JetStream acknowledged it:
	// acks carries the writes to the goroutine that waits for those
	// (feedWritten).
	written atomic.Pointer[LogWritten]
	acks    chan logWrite
}

// LogWritten is told of a delivery log message this process wrote: its
// stream sequence, subject and headers.
type LogWritten func(seq uint64, subject string, h nats.Header)

// logWrite is a log message waiting for its acknowledgement.
type logWrite struct {
	ack     jetstream.PubAckFuture
	subject string
	header  nats.Header
}

// logWriteBacklog bounds the writes waiting for their acknowledgement to
// be handed over; past it a write is not handed over (the reader reads
// it back from the stream).
const logWriteBacklog = 8192

// newDeliveryLog returns the log writer, or nil when the store keeps no log.
func newDeliveryLog(s *store.Store, bodyCap int, log logr.Logger) *deliveryLog {
	if !s.DeliveryLog() {
		return nil
	}
	if bodyCap <= 0 {
		bodyCap = store.DefaultDeliveryLogBodyBytes
	}
	return &deliveryLog{js: s.JetStream(), bodyCap: bodyCap, log: log, acks: make(chan logWrite, logWriteBacklog)}
}

// stored records ds, all to endpoint ns/name, as stored; origin is "" for
// accepted events, "Replay" or "Resend".
func (l *deliveryLog) stored(ns, name string, uid types.UID, ds []store.Delivery, origin string) {
	if l == nil || len(ds) == 0 {
		return
	}
	rs := make([]store.LogRecord, len(ds))
	for i := range ds {
		rs[i] = store.StoredRecord(uid, &ds[i], l.bodyCap, origin)
	}
	l.publish(ns, name, rs)
}

// attempts records the outcomes ocs, all of one endpoint.
func (l *deliveryLog) attempts(ocs []*store.Outcome) {
	if l == nil || len(ocs) == 0 {
		return
	}
	rs := make([]store.LogRecord, len(ocs))
	for i, oc := range ocs {
		rs[i] = store.AttemptRecord(oc)
	}
	l.publish(ocs[0].Namespace, ocs[0].Name, rs)
}

func (l *deliveryLog) publish(ns, name string, rs []store.LogRecord) {
	msgs, err := store.DeliveryLogMsgs(ns, name, rs)
	for _, msg := range msgs {
		if err != nil {
			break
		}
		var ack jetstream.PubAckFuture
		if ack, err = l.js.PublishMsgAsync(msg); err == nil && l.acks != nil && l.written.Load() != nil {
			select {
			case l.acks <- logWrite{ack: ack, subject: msg.Subject, header: msg.Header}:
			default:
			}
		}
	}
	if err != nil {
		l.log.V(1).Info("Writing the delivery log failed; the records are lost from the log (not from delivery)", "namespace", ns, "name", name, "records", len(rs), "error", err.Error())
	}
}

// feedWritten hands every acknowledged write to the LogWritten set, until
// ctx ends. A write whose acknowledgement fails is not handed over.
func (l *deliveryLog) feedWritten(ctx context.Context) {
	for {
		var w logWrite
		select {
		case <-ctx.Done():
			return
		case w = <-l.acks:
		}
		select {
		case <-ctx.Done():
			return
		case a := <-w.ack.Ok():
			if fn := l.written.Load(); fn != nil {
				(*fn)(a.Sequence, w.subject, w.header)
			}
		case err := <-w.ack.Err():
			// Not stored, or not known to be: the reader reads the
			// stream where nothing was handed over.
			l.log.V(1).Info("A delivery log write was not acknowledged; the log's index reads it back if it was stored", "subject", w.subject, "error", err.Error())
		}
	}
}
