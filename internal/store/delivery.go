package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"k8s.io/apimachinery/pkg/types"
)

// Delivery is one pending delivery of one event to one endpoint: what a
// WEBHOOK_DELIVERIES message carries, alone or in a batch.
type Delivery struct {
	EventID    string
	EventType  string
	AcceptedAt string
	// Attempt is how many attempts were made before this one.
	Attempt int
	// ReplacesFailure, on a replayed delivery's first attempt only, is
	// when (RFC 3339) the event had failed for good at this endpoint: the
	// stats take that failure back when the replay's first outcome is
	// folded in. Empty otherwise; a replay is stored as a message of its
	// own (never in a batch), and its retries do not carry it.
	ReplacesFailure string
	// ReplacesSuccess, on a resent delivery's first attempt only, is when
	// (RFC 3339) the event had been delivered to this endpoint: the stats
	// take that success back when the resend's first outcome is folded in,
	// and count the event by the resend's final outcome instead, so an
	// event is counted once however often it is resent. Like
	// ReplacesFailure, only on a message of its own.
	ReplacesSuccess string
	// Body is the exact body delivered: the event's envelope.
	Body []byte
}

// HdrBatch marks a message that carries several deliveries to its endpoint
// (EncodeBatch); its value is how many. A message without it carries one
// Delivery, described by its headers.
const HdrBatch = "Wh-Batch"

// batchFormat is the first byte of a batch message's data.
const batchFormat = 1

// EncodeBatch encodes deliveries as a batch message's data: a format byte,
// then per delivery its attempt and four length-prefixed fields.
func EncodeBatch(ds []Delivery) []byte {
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

// ErrBadBatch is wrapped by the errors of data that is not a well-formed
// batch (or retry) of deliveries.
var ErrBadBatch = errors.New("malformed batch of deliveries")

// DecodeBatch decodes what EncodeBatch encoded; count is the HdrBatch value.
// The bodies share data's memory.
func DecodeBatch(data []byte, count int) ([]Delivery, error) {
	if len(data) == 0 || data[0] != batchFormat {
		return nil, fmt.Errorf("%w: unknown format", ErrBadBatch)
	}
	if count <= 0 || count > len(data) {
		return nil, fmt.Errorf("%w: count %d", ErrBadBatch, count)
	}
	data = data[1:]
	field := func() ([]byte, error) {
		l, n := binary.Uvarint(data)
		if n <= 0 || l > uint64(len(data)-n) {
			return nil, fmt.Errorf("%w: truncated", ErrBadBatch)
		}
		f := data[n : n+int(l) : n+int(l)]
		data = data[n+int(l):]
		return f, nil
	}
	ds := make([]Delivery, count)
	for i := range ds {
		attempt, n := binary.Uvarint(data)
		if n <= 0 || attempt > 1<<20 {
			return nil, fmt.Errorf("%w: truncated", ErrBadBatch)
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
		ds[i] = Delivery{Attempt: int(attempt), EventID: string(fs[0]), EventType: string(fs[1]), AcceptedAt: string(fs[2]), Body: fs[3]}
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after %d deliveries", ErrBadBatch, len(data), count)
	}
	return ds, nil
}

// DeliveriesOf returns the deliveries a stored message carries.
func DeliveriesOf(h nats.Header, data []byte) ([]Delivery, error) {
	if b := h.Get(HdrBatch); b != "" {
		count, err := strconv.Atoi(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %s header %q", ErrBadBatch, HdrBatch, b)
		}
		return DecodeBatch(data, count)
	}
	attempt, _ := strconv.Atoi(h.Get(HdrAttempt))
	return []Delivery{{
		EventID: h.Get(HdrEventID), EventType: h.Get(HdrEventType), AcceptedAt: h.Get(HdrAcceptedAt),
		Attempt: attempt, ReplacesFailure: h.Get(HdrReplacesFailure), ReplacesSuccess: h.Get(HdrReplacesSuccess), Body: data,
	}}, nil
}

// DeliveryMsg is one delivery stored as a message of its own.
func DeliveryMsg(ns, name string, uid types.UID, d *Delivery) *nats.Msg {
	msg := nats.NewMsg(DeliverSubject(ns, name))
	msg.Data = d.Body
	msg.Header.Set(HdrEventID, d.EventID)
	msg.Header.Set(HdrEventType, d.EventType)
	msg.Header.Set(HdrAcceptedAt, d.AcceptedAt)
	msg.Header.Set(HdrEndpoint, name)
	msg.Header.Set(HdrEndpointUID, string(uid))
	msg.Header.Set(HdrAttempt, strconv.Itoa(d.Attempt))
	if d.ReplacesFailure != "" {
		msg.Header.Set(HdrReplacesFailure, d.ReplacesFailure)
	}
	if d.ReplacesSuccess != "" {
		msg.Header.Set(HdrReplacesSuccess, d.ReplacesSuccess)
	}
	return msg
}

// BatchMsg is the message that stores ds, all to one endpoint: a message of
// its own for a single delivery, a batch message for more.
func BatchMsg(ns, name string, uid types.UID, ds []Delivery) *nats.Msg {
	if len(ds) == 1 {
		return DeliveryMsg(ns, name, uid, &ds[0])
	}
	msg := nats.NewMsg(DeliverSubject(ns, name))
	msg.Data = EncodeBatch(ds)
	msg.Header.Set(HdrBatch, strconv.Itoa(len(ds)))
	msg.Header.Set(HdrEndpoint, name)
	msg.Header.Set(HdrEndpointUID, string(uid))
	return msg
}
