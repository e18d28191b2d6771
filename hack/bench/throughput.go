package main

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// throughputRun is one timed pass of N events to the receiver.
type throughputRun struct {
	events  int
	elapsed time.Duration // first post to the last unique receipt
	cpu     time.Duration // this process's CPU over the pass
	ackP50  time.Duration // post to response
	ackP99  time.Duration
	dups    int64
	profile string // CPU profile of the timed window, with -cpuprofile
	// allocs and allocBytes are the heap allocations the whole process made
	// in the timed window (runtime/metrics), for every part of the pass.
	allocs, allocBytes uint64
	// messages is how many messages the pass stored in WEBHOOK_DELIVERIES
	// (0 for the baseline): fewer than events when deliveries share one.
	messages uint64
	// outcomeMessages is how many messages the pass stored in WEBHOOK_OUTCOMES.
	outcomeMessages uint64
}

func (t throughputRun) rate() float64 { return perSec(t.events, t.elapsed) }

func (t throughputRun) cpuPerEvent() time.Duration {
	if t.events == 0 {
		return 0
	}
	return t.cpu / time.Duration(t.events)
}

// benchSecret is a fresh signing secret, as the operator generates them:
// the endpoints sign with its keys, the receiver verifies with the official
// library given the secret.
type benchSecret struct {
	secret string
	keys   [][]byte
}

// newSecretAndReceiver makes a signing secret and a receiver that verifies
// with it, as every standalone measurement starts.
func newSecretAndReceiver() (benchSecret, *receiver, error) {
	keys, err := newBenchSecret()
	if err != nil {
		return benchSecret{}, nil, err
	}
	rcv, err := newReceiver(keys.secret)
	if err != nil {
		return benchSecret{}, nil, err
	}
	return keys, rcv, nil
}

func newBenchSecret() (benchSecret, error) {
	s, err := signing.GenerateSecret()
	if err != nil {
		return benchSecret{}, err
	}
	keys, err := signing.ParseSecrets(s)
	return benchSecret{secret: s, keys: keys}, err
}

func measureThroughput(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, err := newBenchSecret()
	if err != nil {
		return res.fail(err)
	}
	// The passes run side by side in rounds (baseline, single, batches, with
	// ids); each round gives its own ratios, and the round with the median
	// batch ratio is reported, with every round's ratios for the spread. With
	// -cpuprofile the first round profiles exactly its timed windows.
	type round struct{ base, single, batched, withIDs throughputRun }
	var rounds []round
	profilePrefix := cpuProfilePrefix
	defer func() { cpuProfilePrefix = profilePrefix }()
	for r := range max(sz.Rounds, 1) {
		if r > 0 {
			cpuProfilePrefix = ""
		}
		var rd round
		var err error
		if rd.base, err = baselineThroughput(ctx, sz, keys); err != nil {
			return res.fail(fmt.Errorf("round %d, baseline: %w", r+1, err))
		}
		if rd.single, err = operatorThroughput(ctx, sz, keys, 1); err != nil {
			return res.fail(fmt.Errorf("round %d, single events: %w", r+1, err))
		}
		if rd.batched, err = operatorThroughput(ctx, sz, keys, sz.Batch); err != nil {
			return res.fail(fmt.Errorf("round %d, NDJSON batches: %w", r+1, err))
		}
		if rd.withIDs, err = operatorThroughput(ctx, sz, keys, -1); err != nil {
			return res.fail(fmt.Errorf("round %d, single events with ids: %w", r+1, err))
		}
		rounds = append(rounds, rd)
	}
	ratio := func(r throughputRun, rd round) float64 { return r.rate() / rd.base.rate() }
	var spread []string
	for i, rd := range rounds {
		spread = append(spread, fmt.Sprintf("round %d: single %.2f, batches %.2f, with ids %.2f (baseline %.0f events/s)",
			i+1, ratio(rd.single, rd), ratio(rd.batched, rd), ratio(rd.withIDs, rd), rd.base.rate()))
	}
	medianOf := func(f func(round) float64) round {
		sorted := slices.Clone(rounds)
		slices.SortFunc(sorted, func(a, b round) int { return cmp.Compare(f(a), f(b)) })
		return sorted[len(sorted)/2]
	}
	// Each figure comes from its own median round, so the single and batch
	// ratios are each the median of their rounds; CPU breakdowns come from the
	// first (profiled) round.
	mSingle := medianOf(func(rd round) float64 { return ratio(rd.single, rd) })
	mBatch := medianOf(func(rd round) float64 { return ratio(rd.batched, rd) })
	mIDs := medianOf(func(rd round) float64 { return ratio(rd.withIDs, rd) })
	base, single, batched, withIDs := mSingle.base, mSingle.single, mBatch.batched, mIDs.withIDs
	batchBase, idsBase := mBatch.base, mIDs.base
	first := rounds[0]

	const target = 0.4
	res.info(fmt.Sprintf("baseline: plain http.Client to the receiver, C=%d, N=%d", sz.C, sz.N),
		fmtRate(base.rate(), "events/s"))
	res.info("operator, single JSON events: ingest, JetStream, delivery",
		fmtRate(single.rate(), "events/s"))
	rs := single.rate() / base.rate()
	res.add("1. ratio operator (single) / baseline", fmt.Sprintf("%.2f", rs), ">= 0.40 (ceiling ~0.5)", rs >= target)
	res.info(fmt.Sprintf("operator, NDJSON batches of %d", sz.Batch), fmtRate(batched.rate(), "events/s"))
	rb := batched.rate() / batchBase.rate()
	res.add(fmt.Sprintf("2. ratio operator (batches of %d) / baseline", sz.Batch), fmt.Sprintf("%.2f", rb), ">= 0.40 (ceiling ~0.5)", rb >= target)
	res.info("operator, single JSON events with producer ids (idempotency keys)", fmtRate(withIDs.rate(), "events/s"))
	ri := withIDs.rate() / idsBase.rate()
	res.add("1. ratio operator (single with ids) / baseline", fmt.Sprintf("%.2f", ri), ">= 0.40", ri >= target)
	res.charts = append(res.charts, chart{
		file: "throughput.svg", title: "Throughput, in process (median rounds)", unit: "events/s",
		alt: "Bar chart: events per second of the one-hop baseline and the operator with single events, batches and single events with ids",
		bars: []bar{
			{"one hop (baseline)", base.rate()}, {"single events", single.rate()},
			{fmt.Sprintf("batches of %d", sz.Batch), batched.rate()}, {"single, with ids", withIDs.rate()},
		},
	})

	res.notef("The four passes ran side by side in %d rounds; each ratio above is the median round's (for each figure its own median round, against that round's baseline). Every round: %s.", len(rounds), strings.Join(spread, "; "))
	res.notef("Each pass times the first post to the last unique webhook-id the receiver verified; every delivery's signature is checked with the official Standard Webhooks library (none failed), its body kept, and duplicates are counted, not counted twice. The baseline's receiver is the same, so both sides of each ratio do the same work per request.")
	res.notef("The events: %s. After each pass, not timed, every delivered body was compared with what was posted (type, data as a JSON value, timestamp) and every event accepted was found delivered; a pass with any difference fails the run instead of reporting a rate.", payloadText)
	res.notef("Before each pass %d warm-up requests open the keep-alive connections (poster to ingest, dispatcher to receiver, poster to receiver), and a full garbage collection clears what the previous pass left, so no pass pays for collecting another's garbage; neither is timed.", sz.C)
	res.notef("The operator path is the real ingest.Server (schema validation included), delivery.Dispatcher.Enqueue into the JetStream file store (202 after the store's ack; events without an id are stored as deliveries at once, skipping the events stream and the fan-out), the endpoint's worker (%s), delivery.NewHTTPClient with egress allowing 127.0.0.0/8, and the outcome published and folded by the real Aggregator, run by the real status.Writer whose client is a fake that counts and discards applies. The ingestion API authenticates with an ingest.AuthenticatorFunc that checks one static token: in the manager the KubeAuthenticator caches decisions (10 s), so TokenReview/SubjectAccessReview calls are out of the hot path.", inFlightText())
	res.notef("Which pass is which use: the single pass is a producer that posts one event a request without an id (the API generates one; a retried post is a new event); the pass with ids is a producer that retries and so sends an \"id\" with every event (the contract's advice, and WA Blast's status events have a natural one), which the 24 h idempotency window checks in the on-disk index before the event's deliveries are stored and records after; the batch pass is a producer that posts NDJSON batches of 100 events without ids.")
	for _, p := range []struct {
		name string
		r    throughputRun
	}{{"baseline", base}, {"operator single", single}, {"operator batches", batched}, {"operator single with ids", withIDs}} {
		stored := ""
		if p.r.messages > 0 {
			stored = fmt.Sprintf("; %d messages stored in WEBHOOK_DELIVERIES, %.1f deliveries each, and %d in WEBHOOK_OUTCOMES, %.1f outcomes each", p.r.messages, float64(p.r.events)/float64(p.r.messages),
				p.r.outcomeMessages, float64(p.r.events)/float64(max(p.r.outcomeMessages, 1)))
		}
		res.notef("%s: %d events in %s = %.0f events/s; this process's CPU %.0f µs/event and heap allocations %.0f objects (%.1f KiB) per event (posters, servers, store and receiver all live in it); response time p50 %s, p99 %s; duplicates %d%s.",
			p.name, p.r.events, p.r.elapsed.Round(time.Millisecond), p.r.rate(), float64(p.r.cpuPerEvent())/float64(time.Microsecond),
			float64(p.r.allocs)/float64(max(p.r.events, 1)), float64(p.r.allocBytes)/1024/float64(max(p.r.events, 1)),
			ms(p.r.ackP50), ms(p.r.ackP99), p.r.dups, stored)
	}
	if rs < target || rb < target {
		xs := us(single.cpuPerEvent()) / us(base.cpuPerEvent())
		xb := us(batched.cpuPerEvent()) / us(base.cpuPerEvent())
		busy := "Every pass kept the machine's cores busy, so each rate is what its CPU cost allows and the rate ratio follows the inverse of the CPU ratio."
		if min(cores(base), cores(single), cores(batched)) < 0.8*float64(runtime.NumCPU()) {
			busy = "Some pass kept fewer cores busy than the machine has, because other processes held the CPU (see the load average in the header) or the path waited on pull requests and acknowledgements; when every pass is CPU-bound the rate ratio approaches the inverse of the CPU ratio."
		}
		res.findingf("The throughput ratio is below %.2f. CPU per event: the baseline %.0f µs, the operator path %.0f µs with single events (%.1fx the baseline, so at best a ratio of %.2f) and %.0f µs with batches (%.1fx, at best %.2f). The passes kept %.1f, %.1f and %.1f of %d cores busy. %s Per event the baseline makes one HTTP exchange; the operator path makes two (ingest and delivery) and, in the embedded JetStream server, stores, hands out and acknowledges the delivery in WEBHOOK_DELIVERIES (events without an id skip WEBHOOK_EVENTS; deliveries to the endpoint accepted together share one message, so each costs a share of a message, see the deliveries per message above), plus a share of one WEBHOOK_OUTCOMES message (outcomes recorded together are stored together), which the aggregator decodes and folds in.",
			target, us(base.cpuPerEvent()), us(single.cpuPerEvent()), xs, 1/xs, us(batched.cpuPerEvent()), xb, 1/xb,
			cores(base), cores(single), cores(batched), runtime.NumCPU(), busy)
		if first.base.profile == "" || first.single.profile == "" || first.batched.profile == "" {
			res.findingf("Run with `-cpuprofile /tmp/cpu -only throughput` for the CPU profile of each pass and a breakdown by goroutine.")
		}
	}
	if first.base.profile != "" && first.single.profile != "" && first.batched.profile != "" && first.withIDs.profile != "" {
		table, costs, err := breakdownTable(pipelineKinds, []string{"baseline", "operator, single", fmt.Sprintf("operator, batches of %d", sz.Batch), "operator, single with ids"},
			[]string{first.base.profile, first.single.profile, first.batched.profile, first.withIDs.profile}, []int{first.base.events, first.single.events, first.batched.events, first.withIDs.events})
		if err == nil {
			res.extra = "Where each pass's CPU went in the first round, from its CPU profile (" + first.single.profile + " and its siblings cover exactly the timed windows; each sample goes to the first row whose functions are on its stack, so the rows add up):\n\n" + table
			res.profile = first.single.profile
			if rs < target || rb < target {
				res.findingf("From the profiles (the table under Method), the single-event path's extra CPU over the baseline is mostly: %s.", biggestDifferences(costs[1], costs[0], 4))
			}
		} else {
			res.findingf("The CPU profiles could not be summarised: %v", err)
		}
	}
	return res
}

// biggestDifferences names the n kinds whose per-event CPU grew most from
// base to cur.
func biggestDifferences(cur, base []time.Duration, n int) string {
	type diff struct {
		name string
		d    time.Duration
	}
	var ds []diff
	for i := range cur {
		name := "other"
		if i < len(pipelineKinds) {
			name = pipelineKinds[i].name
		}
		ds = append(ds, diff{name, cur[i] - base[i]})
	}
	slices.SortFunc(ds, func(a, b diff) int { return cmp.Compare(b.d, a.d) })
	var parts []string
	for _, d := range ds[:min(n, len(ds))] {
		parts = append(parts, fmt.Sprintf("%s (+%.0f µs)", d.name, us(d.d)))
	}
	return strings.Join(parts, "; ")
}

// inFlightText describes the endpoints' maxInFlight.
func inFlightText() string {
	if maxInFlight == 16 {
		return "maxInFlight 16, the CRD default"
	}
	return fmt.Sprintf("maxInFlight %d, set with -max-in-flight; the CRD default is 16", maxInFlight)
}

// cores is how many cores the pass kept busy on average.
func cores(t throughputRun) float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return t.cpu.Seconds() / t.elapsed.Seconds()
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// baselineThroughput posts N signed envelopes straight to the receiver.
func baselineThroughput(ctx context.Context, sz sizes, keys benchSecret) (throughputRun, error) {
	rcv, err := newReceiver(keys.secret)
	if err != nil {
		return throughputRun{}, err
	}
	defer rcv.close()
	c := newPostClient(sz.C)
	defer c.CloseIdleConnections()
	url := rcv.URL + "/hook"

	// Events 0..N-1 are timed, N..N+C-1 warm up. Each envelope is what the
	// operator would deliver for the event; the Ledger holds each as posted.
	bodies := make([][]byte, sz.N+sz.C)
	ids := make([]string, sz.N+sz.C)
	now := time.Now()
	for i := range bodies {
		pe := benchEvent(i)
		ts := now
		if pe.Timestamp != "" {
			if ts, err = time.Parse(time.RFC3339Nano, pe.Timestamp); err != nil {
				return throughputRun{}, err
			}
		} else {
			pe.Timestamp = now.Format(time.RFC3339Nano)
		}
		ev := delivery.Event{Type: pe.Type, Timestamp: ts, Data: pe.Data}
		if bodies[i], err = ev.Envelope(); err != nil {
			return throughputRun{}, err
		}
		ids[i] = "evt_bl_" + strconv.Itoa(i)
		if i >= sz.N {
			ids[i] = "warm_" + strconv.Itoa(i-sz.N)
		}
		pe.ID = ids[i]
		rcv.Ledger.Add(pe)
	}
	send := func(id string, body []byte) error {
		h := http.Header{"User-Agent": {"bench-baseline"}}
		signing.SetHeaders(h, keys.keys, id, time.Now(), body)
		code, _, err := post(ctx, c, url, "application/json", body, h)
		if err == nil && code/100 != 2 {
			err = fmt.Errorf("receiver answered %d", code)
		}
		return err
	}

	if err := warmUp(ctx, rcv, sz.C, func(i int) error { return send(ids[sz.N+i], bodies[sz.N+i]) }); err != nil {
		return throughputRun{}, err
	}

	rcv.reset(sz.N)
	run, err := timedPass(ctx, rcv, sz.C, sz.N, sz.N, "throughput-baseline", func(i int) error {
		return send(ids[i], bodies[i])
	})
	if err != nil {
		return throughputRun{}, err
	}
	return run, rcv.check("throughput baseline", ids[:sz.N])
}

// timedPass makes posts requests from c posters (send(i) makes the i-th)
// and waits until the receiver, reset for n events, has them all. The run
// is timed from the first post to the last unique receipt, with this
// process's CPU over that window and, when profiling, its CPU profile named
// profile ("" for none).
func timedPass(ctx context.Context, rcv *receiver, c, posts, n int, profile string, send func(i int) error) (throughputRun, error) {
	acks := newAckTimes(posts)
	stopProfile := func() string { return "" }
	if profile != "" {
		stopProfile = startProfile(profile)
	}
	defer stopProfile()
	// Garbage the previous pass left is collected now, not on this pass's time.
	runtime.GC()
	cpu0, heap0 := processCPU(), heapAllocs()
	start := time.Now()
	failed, ferr := runPosters(ctx, c, posts, func(i int) error {
		t := time.Now()
		err := send(i)
		acks.set(i, time.Since(t))
		return err
	})
	if failed > 0 {
		return throughputRun{}, fmt.Errorf("%d posts failed, first: %w", failed, ferr)
	}
	last, err := rcv.wait(ctx, waitBudget(n))
	cpu, heap := processCPU()-cpu0, heapAllocs().minus(heap0)
	prof := stopProfile()
	if err != nil {
		u, _, bad := rcv.counts()
		return throughputRun{}, fmt.Errorf("%d of %d received (%d bad signatures): %w", u, n, bad, err)
	}
	run, err := finishRun(rcv, n, last.Sub(start), cpu, acks, prof)
	run.allocs, run.allocBytes = heap.objects, heap.bytes
	return run, err
}

// operatorThroughput posts N events to the ingestion API, in batches of
// batch events (1: one application/json event a request; -1: the same, each
// event with a producer id).
func operatorThroughput(ctx context.Context, sz sizes, keys benchSecret, batch int) (throughputRun, error) {
	withIDs := batch < 0
	batch = max(batch, 1)
	rcv, err := newReceiver(keys.secret)
	if err != nil {
		return throughputRun{}, err
	}
	defer rcv.close()
	p, err := startPipeline(ctx, []endpoint.Endpoint{benchEndpoint("crm", rcv.URL+"/hook", keys.keys)})
	if err != nil {
		return throughputRun{}, err
	}
	defer p.stop()
	c := newPostClient(sz.C)
	defer c.CloseIdleConnections()
	url, hdr := p.EventsURL(), ingestHeader()

	if err := warmUp(ctx, rcv, sz.C, func(i int) error {
		ev := benchEvent(sz.N + i)
		answer, err := postEvents(ctx, c, url, hdr, false, ev.JSON(false))
		if err == nil {
			_, err = rcv.Ledger.Accepted([]testutil.Posted{ev}, answer)
		}
		return err
	}); err != nil {
		return throughputRun{}, err
	}

	posts := sz.N / batch
	n := posts * batch
	posted := make([][]testutil.Posted, posts)
	bodies := make([][]byte, posts)
	for i := range bodies {
		switch {
		case withIDs:
			posted[i] = []testutil.Posted{withProducerID(benchEvent(i), i)}
			bodies[i] = posted[i][0].JSON(true)
		case batch == 1:
			posted[i] = []testutil.Posted{benchEvent(i)}
			bodies[i] = posted[i][0].JSON(false)
		default:
			posted[i] = benchEvents(i*batch, batch)
			bodies[i] = testutil.NDJSON(posted[i], false)
		}
	}
	// The 202 answers, kept for the Ledger after the timed window.
	answers := make([][]byte, posts)
	rcv.reset(n)
	pass := "single"
	if batch > 1 {
		pass = "batches"
	} else if withIDs {
		pass = "ids"
	}
	seq0, err := messagesWritten(ctx, p.Store, store.StreamDeliveries)
	if err != nil {
		return throughputRun{}, err
	}
	oseq0, err := messagesWritten(ctx, p.Store, store.StreamOutcomes)
	if err != nil {
		return throughputRun{}, err
	}
	run, err := timedPass(ctx, rcv, sz.C, posts, n, "throughput-"+pass, func(i int) error {
		var err error
		answers[i], err = postEvents(ctx, c, url, hdr, batch > 1, bodies[i])
		return err
	})
	if err != nil {
		return throughputRun{}, err
	}
	if err := p.err(); err != nil {
		return throughputRun{}, err
	}
	seq1, err := messagesWritten(ctx, p.Store, store.StreamDeliveries)
	if err != nil {
		return throughputRun{}, err
	}
	// Outcomes of the last deliveries may still be on their way to the
	// stream; the count is read after every delivery arrived, so it can be
	// short by the last few messages.
	oseq1, err := messagesWritten(ctx, p.Store, store.StreamOutcomes)
	if err != nil {
		return throughputRun{}, err
	}
	run.messages = seq1 - seq0
	run.outcomeMessages = oseq1 - oseq0
	ids, err := recordAccepted(rcv.Ledger, posted, answers)
	if err != nil {
		return throughputRun{}, err
	}
	return run, rcv.check("throughput "+pass, ids)
}

// messagesWritten is how many messages the stream has stored so far.
func messagesWritten(ctx context.Context, s *store.Store, stream string) (uint64, error) {
	st, err := s.JetStream().Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

func finishRun(rcv *receiver, n int, elapsed, cpu time.Duration, acks *ackTimes, profile string) (throughputRun, error) {
	_, dups, bad := rcv.counts()
	if bad > 0 {
		return throughputRun{}, fmt.Errorf("%d deliveries failed signature verification", bad)
	}
	p50, p99 := acks.percentiles()
	return throughputRun{events: n, elapsed: elapsed, cpu: cpu, ackP50: p50, ackP99: p99, dups: dups, profile: profile}, nil
}

// waitBudget bounds the wait for n deliveries: generous (50/s at worst), but bounded.
func waitBudget(n int) time.Duration {
	return min(max(60*time.Second, time.Duration(n)*20*time.Millisecond), 5*time.Minute)
}

// ackTimes records one response time per request.
type ackTimes struct {
	mu sync.Mutex
	d  []time.Duration
}

func newAckTimes(n int) *ackTimes { return &ackTimes{d: make([]time.Duration, n)} }

func (a *ackTimes) set(i int, d time.Duration) {
	a.mu.Lock()
	a.d[i] = d
	a.mu.Unlock()
}

func (a *ackTimes) percentiles() (p50, p99 time.Duration) {
	a.mu.Lock()
	d := append([]time.Duration(nil), a.d...)
	a.mu.Unlock()
	sortDurations(d)
	return percentile(d, 50), percentile(d, 99)
}
