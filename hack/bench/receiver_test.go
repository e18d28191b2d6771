package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestReceiverChecksContent holds the bench's receiver to its promise: a
// delivery with the posted content passes, one carrying another event's
// data fails the check, and a signature the official library refuses ends
// the wait at once with a content error.
func TestReceiverChecksContent(t *testing.T) {
	sec, err := newBenchSecret()
	if err != nil {
		t.Fatal(err)
	}
	other, err := newBenchSecret()
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := newReceiver(sec.secret)
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.close()
	ctx := context.Background()
	c := newPostClient(1)
	defer c.CloseIdleConnections()
	deliver := func(keys [][]byte, id string, ev testutil.Posted) {
		t.Helper()
		ts, _ := time.Parse(time.RFC3339Nano, ev.Timestamp)
		body, err := (&delivery.Event{Type: ev.Type, Timestamp: ts, Data: ev.Data}).Envelope()
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		signing.SetHeaders(h, keys, id, time.Now(), body)
		if _, _, err := post(ctx, c, rcv.URL+"/hook", "application/json", body, h); err != nil {
			t.Fatal(err)
		}
	}
	evs := benchEvents(0, 2)
	for i := range evs {
		evs[i].ID = "e" + string(rune('0'+i))
		if evs[i].Timestamp == "" {
			evs[i].Timestamp = "2026-11-28T10:15:00.123Z"
		}
	}
	rcv.Ledger.Add(evs...)

	rcv.reset(2)
	deliver(sec.keys, "e0", evs[0])
	deliver(sec.keys, "e1", evs[1])
	if _, err := rcv.wait(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := rcv.check("good", []string{"e0", "e1"}); err != nil {
		t.Fatalf("the posted content failed the check: %v", err)
	}

	rcv.reset(2)
	deliver(sec.keys, "e0", evs[1]) // e1's data under e0's id
	if err := rcv.check("swapped", nil); !isContentError(err) || !strings.Contains(err.Error(), "swapped") || !strings.Contains(err.Error(), "data") {
		t.Fatalf("another event's data: check = %v, want a content error naming the pass and the data", err)
	}
	if err := rcv.check("missing", []string{"e0", "e1"}); !isContentError(err) || !strings.Contains(err.Error(), "never arrived") {
		t.Fatalf("a missing event: check = %v, want a content error", err)
	}

	rcv.reset(1)
	deliver(other.keys, "e0", evs[0])
	start := time.Now()
	if _, err := rcv.wait(ctx, 10*time.Second); !isContentError(err) || !strings.Contains(err.Error(), "verification") {
		t.Fatalf("a bad signature: wait = %v, want a content error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the wait took %s to notice the bad signature", d)
	}
}

func isContentError(err error) bool {
	var ce *contentError
	return errors.As(err, &ce)
}
