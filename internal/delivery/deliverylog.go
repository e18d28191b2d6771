package delivery

import (
	"github.com/go-logr/logr"
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
}

// newDeliveryLog returns the log writer, or nil when the store keeps no log.
func newDeliveryLog(s *store.Store, bodyCap int, log logr.Logger) *deliveryLog {
	if !s.DeliveryLog() {
		return nil
	}
	if bodyCap <= 0 {
		bodyCap = store.DefaultDeliveryLogBodyBytes
	}
	return &deliveryLog{js: s.JetStream(), bodyCap: bodyCap, log: log}
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
		_, err = l.js.PublishMsgAsync(msg)
	}
	if err != nil {
		l.log.V(1).Info("Writing the delivery log failed; the records are lost from the log (not from delivery)", "namespace", ns, "name", name, "records", len(rs), "error", err.Error())
	}
}
