package store

import (
	"bytes"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
)

func TestBatchEncodingRoundTrips(t *testing.T) {
	ds := []Delivery{
		{EventID: "msg_1", EventType: "message.sent", AcceptedAt: "2026-11-29T01:02:03.456Z", Body: []byte(`{"type":"message.sent"}`)},
		{EventID: "", EventType: "x", AcceptedAt: "", Attempt: 3, Body: nil},
		{EventID: "msg_3", EventType: "campaign.completed", AcceptedAt: "t", Body: bytes.Repeat([]byte("é"), 70000)},
	}
	got, err := DecodeBatch(EncodeBatch(ds), len(ds))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ds {
		want, g := ds[i], got[i]
		if g.EventID != want.EventID || g.EventType != want.EventType || g.AcceptedAt != want.AcceptedAt || g.Attempt != want.Attempt || !bytes.Equal(g.Body, want.Body) {
			t.Errorf("delivery %d: got %+v, want %+v", i, g, want)
		}
	}

	h := nats.Header{}
	h.Set(HdrBatch, "3")
	if got, err := DeliveriesOf(h, EncodeBatch(ds)); err != nil || len(got) != 3 {
		t.Errorf("deliveriesOf a batch message: %d deliveries, %v", len(got), err)
	}
	single := DeliveryMsg("shop", "crm.v1", "uid-1", &ds[1])
	if got, err := DeliveriesOf(single.Header, single.Data); err != nil || len(got) != 1 || got[0].Attempt != 3 || got[0].EventType != "x" {
		t.Errorf("deliveriesOf a message of its own: %+v, %v", got, err)
	}
}

func TestMalformedBatchesAreRefused(t *testing.T) {
	good := EncodeBatch([]Delivery{{EventID: "a", Body: []byte("{}")}, {EventID: "b", Body: []byte("{}")}})
	for name, c := range map[string]struct {
		data  []byte
		count int
	}{
		"empty":                {nil, 1},
		"unknown format":       {append([]byte{9}, good[1:]...), 2},
		"count too high":       {good, 3},
		"count too low":        {good, 1},
		"count zero":           {good, 0},
		"truncated":            {good[:len(good)-1], 2},
		"length past the end":  {[]byte{batchFormat, 0, 200}, 1},
		"attempt out of range": {append([]byte{batchFormat}, 0xff, 0xff, 0xff, 0xff, 0x0f), 1},
	} {
		if _, err := DecodeBatch(c.data, c.count); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: %v, want errBadBatch", name, err)
		}
	}
	h := nats.Header{}
	h.Set(HdrBatch, "two")
	if _, err := DeliveriesOf(h, good); !errors.Is(err, ErrBadBatch) {
		t.Errorf("non-numeric %s header: %v", HdrBatch, err)
	}
}
