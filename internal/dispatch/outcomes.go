package dispatch

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// maxOutcomeBatch bounds the outcomes stored in one message (an outcome's
// JSON is under 2 KiB, its error text capped at 1 KiB, so a message stays
// far below NATS's 1 MiB default payload limit).
const maxOutcomeBatch = 128

// pendingOutcome is one endpoint's outcomes waiting to be stored; done
// receives the result.
type pendingOutcome struct {
	ocs  []*outcome
	done chan error
}

// recordOutcomes stores ocs, the outcomes of one endpoint, in the outcomes
// stream and returns once JetStream acknowledged them (or failed to).
// Outcomes recorded at the same time are stored together, one message per
// endpoint: under load one write carries the outcomes of many deliveries,
// and the aggregator decodes one message for them. Only Start's outcome
// recorder takes them, so this must be called while the dispatcher runs (by
// endpoint workers, which Start stops before the recorder).
func (d *Dispatcher) recordOutcomes(ocs []*outcome) error {
	if len(ocs) == 0 {
		return nil
	}
	p := pendingOutcome{ocs: ocs, done: make(chan error, 1)}
	d.outcomes <- p
	return <-p.done
}

// runOutcomeRecorder stores what recordOutcomes is given until quit is
// closed, then stores what is left and returns.
func (d *Dispatcher) runOutcomeRecorder(quit <-chan struct{}) {
	batch := make([]pendingOutcome, 0, maxOutcomeBatch)
	for {
		batch = batch[:0]
		select {
		case p := <-d.outcomes:
			batch = append(batch, p)
		case <-quit:
			for {
				select {
				case p := <-d.outcomes:
					d.storeOutcomes([]pendingOutcome{p})
				default:
					return
				}
			}
		}
		// Take whatever else is waiting: while one batch is being stored, the
		// next one fills, so batches grow with the load and stay single
		// outcomes (no added wait) when it is light.
		n := len(batch[0].ocs)
	fill:
		for n < maxOutcomeBatch {
			select {
			case p := <-d.outcomes:
				batch = append(batch, p)
				n += len(p.ocs)
			default:
				break fill
			}
		}
		// Under load (a message's worth of outcomes at a time: its
		// deliveries shared a group commit) wait up to the group commit
		// delay for the next message's, so one write carries both. The
		// deliveries are done; only their acknowledgement waits.
		if d.recorderDelay > 0 && n > 1 && n < maxOutcomeBatch {
			batch, n = d.lingerOutcomes(batch, n, quit)
		}
		d.storeOutcomes(batch)
	}
}

// lingerOutcomes adds to batch what arrives within d.recorderDelay, until
// it holds maxOutcomeBatch outcomes or quit is closed.
func (d *Dispatcher) lingerOutcomes(batch []pendingOutcome, n int, quit <-chan struct{}) ([]pendingOutcome, int) {
	timer := time.NewTimer(d.recorderDelay)
	defer timer.Stop()
	for n < maxOutcomeBatch {
		select {
		case p := <-d.outcomes:
			batch = append(batch, p)
			n += len(p.ocs)
		case <-timer.C:
			return batch, n
		case <-quit:
			return batch, n
		}
	}
	return batch, n
}

// storeOutcomes publishes the batch as one message per endpoint (more when
// an endpoint has over maxOutcomeBatch outcomes in it), waits for
// JetStream's acknowledgements and tells every waiting caller.
func (d *Dispatcher) storeOutcomes(batch []pendingOutcome) {
	type group struct {
		ocs     []*outcome
		futures []jetstream.PubAckFuture
		err     error
	}
	var order []types.UID
	groups := map[types.UID]*group{}
	groupOf := func(p *pendingOutcome) *group { return groups[p.ocs[0].UID] }
	for i := range batch {
		uid := batch[i].ocs[0].UID
		g := groups[uid]
		if g == nil {
			g = &group{}
			groups[uid] = g
			order = append(order, uid)
		}
		g.ocs = append(g.ocs, batch[i].ocs...)
	}
	for _, uid := range order {
		g := groups[uid]
		for ocs := range slices.Chunk(g.ocs, maxOutcomeBatch) {
			first := ocs[0]
			f, err := d.js.PublishMsgAsync(&nats.Msg{Subject: outcomeSubject(first.Namespace, first.Name), Data: encodeOutcomes(ocs)})
			if err != nil {
				g.err = err
				break
			}
			g.futures = append(g.futures, f)
		}
	}
	for _, uid := range order {
		g := groups[uid]
		for _, f := range g.futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				if g.err == nil {
					g.err = err
				}
			}
		}
	}
	for i := range batch {
		batch[i].done <- groupOf(&batch[i]).err
	}
}

// outcomesFormat is the first byte of an outcomes message in the binary
// encoding of encodeOutcomes. Messages written by earlier versions are JSON:
// an array (first byte '['), or before batching a single object ('{').
const outcomesFormat = 2

// Flags of an encoded outcome.
const (
	ocAttempted = 1 << iota
	ocGone
	ocHasTime
	ocHasNextAttempt
)

// encodeOutcomes encodes one endpoint's outcomes for the outcomes stream: a
// format byte, the count, then per outcome a flags byte, nine length-prefixed
// strings and six varints. It is several times cheaper to write and read
// than JSON, and the aggregator reads every outcome.
func encodeOutcomes(ocs []*outcome) []byte {
	n := 1 + binary.MaxVarintLen32
	for _, oc := range ocs {
		n += 1 + 9*binary.MaxVarintLen32 + 6*binary.MaxVarintLen64 + len(oc.UID) + len(oc.Namespace) + len(oc.Name) +
			len(oc.EventID) + len(oc.EventType) + len(oc.Result) + len(oc.Reason) + len(oc.Error) + len(oc.AcceptedAt)
	}
	buf := make([]byte, 0, n)
	buf = append(buf, outcomesFormat)
	buf = binary.AppendUvarint(buf, uint64(len(ocs)))
	for _, oc := range ocs {
		var flags byte
		if oc.Attempted {
			flags |= ocAttempted
		}
		if oc.Gone {
			flags |= ocGone
		}
		if !oc.Time.IsZero() {
			flags |= ocHasTime
		}
		if !oc.NextAttempt.IsZero() {
			flags |= ocHasNextAttempt
		}
		buf = append(buf, flags)
		for _, s := range [...]string{string(oc.UID), oc.Namespace, oc.Name, oc.EventID, oc.EventType, string(oc.Result), oc.Reason, oc.Error, oc.AcceptedAt} {
			buf = binary.AppendUvarint(buf, uint64(len(s)))
			buf = append(buf, s...)
		}
		var t, next int64
		if flags&ocHasTime != 0 {
			t = oc.Time.UnixNano()
		}
		if flags&ocHasNextAttempt != 0 {
			next = oc.NextAttempt.UnixNano()
		}
		for _, v := range [...]int64{oc.Generation, int64(oc.Attempt), int64(oc.StatusCode), oc.DurationMS, t, next} {
			buf = binary.AppendVarint(buf, v)
		}
	}
	return buf
}

var errBadOutcomes = errors.New("malformed outcomes message")

// decodeOutcomes reads an outcomes message in any format ever written.
func decodeOutcomes(data []byte) ([]outcome, error) {
	if len(data) > 0 && data[0] == outcomesFormat {
		return decodeBinaryOutcomes(data[1:])
	}
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) > 0 && data[0] == '[' {
		var ocs []outcome
		err := json.Unmarshal(data, &ocs)
		return ocs, err
	}
	var oc outcome
	if err := json.Unmarshal(data, &oc); err != nil {
		return nil, err
	}
	return []outcome{oc}, nil
}

func decodeBinaryOutcomes(data []byte) ([]outcome, error) {
	count, n := binary.Uvarint(data)
	// Every outcome takes at least 16 bytes.
	if n <= 0 || count == 0 || count > uint64(len(data)/16+1) {
		return nil, fmt.Errorf("%w: bad count", errBadOutcomes)
	}
	data = data[n:]
	ocs := make([]outcome, count)
	for i := range ocs {
		if len(data) == 0 {
			return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
		}
		flags := data[0]
		data = data[1:]
		var strs [9]string
		for j := range strs {
			l, n := binary.Uvarint(data)
			if n <= 0 || l > uint64(len(data)-n) {
				return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
			}
			strs[j] = string(data[n : n+int(l)])
			data = data[n+int(l):]
		}
		var ints [6]int64
		for j := range ints {
			v, n := binary.Varint(data)
			if n <= 0 {
				return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
			}
			ints[j] = v
			data = data[n:]
		}
		oc := &ocs[i]
		oc.UID, oc.Namespace, oc.Name = types.UID(strs[0]), strs[1], strs[2]
		oc.EventID, oc.EventType = strs[3], strs[4]
		oc.Result, oc.Reason, oc.Error, oc.AcceptedAt = webhooksv1alpha1.DeliveryResult(strs[5]), strs[6], strs[7], strs[8]
		oc.Generation, oc.Attempt, oc.StatusCode, oc.DurationMS = ints[0], int32(ints[1]), int32(ints[2]), ints[3]
		oc.Attempted, oc.Gone = flags&ocAttempted != 0, flags&ocGone != 0
		if flags&ocHasTime != 0 {
			oc.Time = time.Unix(0, ints[4]).UTC()
		}
		if flags&ocHasNextAttempt != 0 {
			oc.NextAttempt = time.Unix(0, ints[5]).UTC()
		}
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after %d outcomes", errBadOutcomes, len(data), count)
	}
	return ocs, nil
}
