package deliverylog

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/store"
)

// The log's messages are read with JetStream's direct get API (the stream
// allows it), by sequence, without a consumer, from any replica of the
// stream: the index (index.go) says which sequences hold a delivery.

// rawMsg is one message of the log.
type rawMsg struct {
	subject string
	seq     uint64
	time    time.Time
	data    []byte
}

// directGetRequest is JetStream's JSApiMsgGetRequest (the field used here).
type directGetRequest struct {
	Seq uint64 `json:"seq"`
}

// fetchInFlight is how many direct gets a fetch has in flight at once.
const fetchInFlight = 256

// directTimeout bounds the wait for one direct get answer when ctx has no
// earlier deadline.
const directTimeout = 10 * time.Second

func (r *Reader) directSubject() string {
	return jetstream.DefaultAPIPrefix + "DIRECT.GET." + store.StreamDeliveryLog
}

// fetch returns the messages at seqs, in the same order; a sequence the
// stream no longer holds (it aged out) is left out. The requests are sent
// together, fetchInFlight at a time, each answered to an inbox of its own
// under one subscription: they wait on the store, not on each other.
func (r *Reader) fetch(ctx context.Context, seqs []uint64) ([]rawMsg, error) {
	if len(seqs) == 0 {
		return nil, nil
	}
	prefix := r.nc.NewInbox()
	sub, err := r.nc.SubscribeSync(prefix + ".*")
	if err != nil {
		return nil, fmt.Errorf("reading the delivery log: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	got := make([]rawMsg, len(seqs))
	found := make([]bool, len(seqs))
	for start := 0; start < len(seqs); start += fetchInFlight {
		end := min(start+fetchInFlight, len(seqs))
		for i := start; i < end; i++ {
			req, err := json.Marshal(directGetRequest{Seq: seqs[i]})
			if err != nil {
				return nil, err
			}
			if err := r.nc.PublishRequest(r.directSubject(), prefix+"."+strconv.Itoa(i), req); err != nil {
				return nil, fmt.Errorf("reading the delivery log: %w", err)
			}
		}
		for range end - start {
			rctx, cancel := context.WithTimeout(ctx, directTimeout)
			resp, err := sub.NextMsgWithContext(rctx)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("reading the delivery log: %w", err)
			}
			r.reads.Add(1)
			i, err := strconv.Atoi(resp.Subject[strings.LastIndexByte(resp.Subject, '.')+1:])
			if err != nil || i < start || i >= end {
				return nil, fmt.Errorf("reading the delivery log: an answer to %s, which was not asked", resp.Subject)
			}
			m, ok, err := parseDirect(resp)
			if err != nil {
				return nil, err
			}
			got[i], found[i] = m, ok
		}
	}
	out := got[:0]
	for i := range got {
		if found[i] {
			out = append(out, got[i])
		}
	}
	return out, nil
}

// parseDirect reads a direct get answer: a message, or a status (404:
// none).
func parseDirect(resp *nats.Msg) (m rawMsg, found bool, err error) {
	switch st := resp.Header.Get("Status"); st {
	case "":
	case "404":
		return m, false, nil
	default:
		return m, false, fmt.Errorf("reading the delivery log: direct get answered %s %s", st, resp.Header.Get("Description"))
	}
	m.subject = resp.Header.Get(jetstream.SubjectHeader)
	m.seq, err = strconv.ParseUint(resp.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return m, false, fmt.Errorf("reading the delivery log: a direct get answer without a sequence: %w", err)
	}
	m.time, _ = time.Parse(time.RFC3339Nano, resp.Header.Get(jetstream.TimeStampHeaer))
	m.data = resp.Data
	return m, true, nil
}
