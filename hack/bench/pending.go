package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

func measurePending(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, err := newBenchSecret()
	if err != nil {
		return res.fail(err)
	}
	port, err := testutil.FreeLoopbackPort() // closed again: every connection is refused
	if err != nil {
		return res.fail(err)
	}
	ep := benchEndpoint("down", fmt.Sprintf("http://127.0.0.1:%d/hook", port), keys.keys)
	ep.Policy.MaxAttempts = 20
	ep.Policy.InitialBackoff = 3600 * time.Second
	p, err := startPipeline(ctx, []endpoint.Endpoint{ep})
	if err != nil {
		return res.fail(err)
	}
	defer p.stop()

	// One event first, so the endpoint's worker and consumer exist and the
	// stats entry is in place before the baseline is taken.
	if err := enqueueN(ctx, p, 0, 1); err != nil {
		return res.fail(err)
	}
	if !waitFor(ctx, 30*time.Second, 50*time.Millisecond, func() bool {
		st, ok := p.Aggregator.Get(ep.UID)
		return ok && st.EventsPending == 1
	}) {
		return res.fail(fmt.Errorf("the first delivery was not attempted within 30s"))
	}
	time.Sleep(2 * time.Second) // outcomes persisted and acked
	heap0 := liveHeap()
	disk0 := dirSize(p.dir)
	stored0, err := streamBytes(ctx, p)
	if err != nil {
		return res.fail(err)
	}

	n := sz.PendingEvents
	start := time.Now()
	for from := 1; from <= n; from += 1000 {
		if err := enqueueN(ctx, p, from, min(1000, n+1-from)); err != nil {
			return res.fail(err)
		}
	}
	if !waitFor(ctx, waitBudget(n), 100*time.Millisecond, func() bool {
		st, ok := p.Aggregator.Get(ep.UID)
		return ok && st.TotalEventsSent == int64(n+1) && st.EventsPending == int64(n+1)
	}) {
		st, _ := p.Aggregator.Get(ep.UID)
		return res.fail(fmt.Errorf("after %s: %d attempted, %d pending of %d", waitBudget(n), st.TotalEventsSent, st.EventsPending, n+1))
	}
	attempted := time.Since(start)
	// The last outcomes folded in, persisted and acknowledged (the aggregator
	// holds each outcome message for 5 s), and the file store flushed.
	time.Sleep(8 * time.Second)
	heap1 := liveHeap()
	disk1 := dirSize(p.dir)
	stored1, err := streamBytes(ctx, p)
	if err != nil {
		return res.fail(err)
	}
	st, _ := p.Aggregator.Get(ep.UID)

	perDisk := float64(disk1-disk0) / float64(n)
	perHeap := float64(int64(heap1)-int64(heap0)) / float64(n)
	res.info(fmt.Sprintf("7. data dir growth per pending event (%d pending)", n), fmt.Sprintf("%.0f bytes", perDisk))
	res.info("7. heap growth per pending event (HeapAlloc after GC)", fmt.Sprintf("%.0f bytes", perHeap))
	res.notef("One endpoint points at a closed loopback port with maxAttempts 20 and initialBackoffSeconds 3600: every delivery's first attempt is refused and it waits for its retry (about an hour away) in the embedded store's on-disk retry queue. %d events were enqueued with Dispatcher.Enqueue in batches of 1000; all were attempted once after %s (stats: sent %d, pending %d, consecutive failures %d).",
		n, attempted.Round(100*time.Millisecond), st.TotalEventsSent, st.EventsPending, st.ConsecutiveFailures)
	res.notef("Disk: the sum of file sizes under the store's data dir grew from %s to %s. Stream contents (JetStream's own byte count, all streams) grew by %.0f bytes per pending event; the rest is file store overhead (indexes, block slack, removed work-queue messages not yet compacted).",
		mib(disk0), mib(disk1), float64(int64(stored1)-int64(stored0))/float64(n))
	res.notef("Memory: runtime.ReadMemStats HeapAlloc after two GCs, in the process that hosts the embedded NATS server, the dispatcher and the aggregator: %s before, %s after. The process RSS is not used because the Go runtime does not return freed memory at once. The growth includes JetStream's duplicate-window entries for the retry schedules' message IDs (kept for 5 minutes) and the aggregator's dedupe keys of recent outcomes (kept for 2 minutes), whether or not the delivery is still pending.",
		mib(int64(heap0)), mib(int64(heap1)))
	res.notef("The brief sets no target for these; they are informational.")
	return res
}

func enqueueN(ctx context.Context, p *pipeline, from, count int) error {
	events := make([]delivery.Event, count)
	now := time.Now()
	for i := range events {
		pe := benchEvent(from + i)
		events[i] = delivery.Event{
			ID: fmt.Sprintf("evt_pending_%07d", from+i), Namespace: benchNS, Type: pe.Type,
			Timestamp: now, Data: pe.Data,
		}
	}
	_, err := p.Dispatcher.Enqueue(ctx, events)
	return err
}

// liveHeap is HeapAlloc after garbage collection.
func liveHeap() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// streamBytes sums the bytes JetStream reports for every stream.
func streamBytes(ctx context.Context, p *pipeline) (uint64, error) {
	var total uint64
	js := p.Store.JetStream()
	for _, name := range []string{store.StreamEvents, store.StreamDeliveries, store.StreamFailed, store.StreamOutcomes, "KV_" + store.BucketStats} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		total += info.State.Bytes
	}
	return total, nil
}
