package deliverylog

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/store"
)

// The log is read with JetStream's direct get API (the stream allows it):
// a message by subject from a sequence on, or a batch of them, without a
// consumer. A delivery has a subject of its own, so one delivery's records
// and one WebhookConfig's come out of the store's subject index without
// reading the rest of the log.

// rawMsg is one message of the log.
type rawMsg struct {
	subject string
	seq     uint64
	time    time.Time
	data    []byte
}

// directGetRequest is JetStream's JSApiMsgGetRequest (the fields used here).
type directGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	Batch   int    `json:"batch,omitempty"`
}

// readBatch is how many messages one batch request asks for.
const readBatch = 512

// directTimeout bounds one direct get when ctx has no earlier deadline.
const directTimeout = 10 * time.Second

func (r *Reader) directSubject() string {
	return jetstream.DefaultAPIPrefix + "DIRECT.GET." + store.StreamDeliveryLog
}

// next returns the first message of the subjects matching filter with a
// sequence from seq on; found is false when there is none.
func (r *Reader) next(ctx context.Context, filter string, seq uint64) (m rawMsg, found bool, err error) {
	req, err := json.Marshal(directGetRequest{Seq: max(seq, 1), NextFor: filter})
	if err != nil {
		return m, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, directTimeout)
	defer cancel()
	resp, err := r.nc.RequestWithContext(ctx, r.directSubject(), req)
	if err != nil {
		return m, false, fmt.Errorf("reading the delivery log: %w", err)
	}
	r.reads.Add(1)
	return parseDirect(resp)
}

// parseDirect reads a direct get answer: a message, or a status (404:
// none, 204: the end of a batch).
func parseDirect(resp *nats.Msg) (m rawMsg, found bool, err error) {
	switch st := resp.Header.Get("Status"); st {
	case "":
	case "404", "204":
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

// scan calls each for the messages of the subjects matching filter with
// sequences from from to upTo, in order, until each returns false. expect,
// when above 0, is how many messages the caller expects there: the first
// batch asks for no more (a batch does not stop at upTo, so a smaller one
// wastes less), the later ones for readBatch.
func (r *Reader) scan(ctx context.Context, filter string, from, upTo uint64, expect int, each func(rawMsg) bool) error {
	inbox := r.nc.NewRespInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("reading the delivery log: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	seq := max(from, 1)
	batch := readBatch
	if expect > 0 {
		batch = min(expect, readBatch)
	}
	for seq <= upTo {
		req, err := json.Marshal(directGetRequest{Seq: seq, NextFor: filter, Batch: batch})
		batch = readBatch
		if err != nil {
			return err
		}
		if err := r.nc.PublishRequest(r.directSubject(), inbox, req); err != nil {
			return fmt.Errorf("reading the delivery log: %w", err)
		}
		for {
			rctx, cancel := context.WithTimeout(ctx, directTimeout)
			resp, err := sub.NextMsgWithContext(rctx)
			cancel()
			if err != nil {
				return fmt.Errorf("reading the delivery log: %w", err)
			}
			r.reads.Add(1)
			m, found, err := parseDirect(resp)
			if err != nil {
				return err
			}
			if !found {
				// Nothing at all (404), or the end of the batch (204),
				// which says how many more match.
				if resp.Header.Get("Status") == "404" || resp.Header.Get("Nats-Num-Pending") == "0" {
					return nil
				}
				break
			}
			seq = m.seq + 1
			// Past upTo, or enough: the rest of the batch is dropped with
			// the subscription.
			if m.seq > upTo || !each(m) {
				return nil
			}
		}
	}
	return nil
}
