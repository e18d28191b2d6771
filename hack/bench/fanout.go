package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
)

func measureFanout(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, rcv, err := newSecretAndReceiver()
	if err != nil {
		return res.fail(err)
	}
	defer rcv.close()
	eps := make([]endpoint.Endpoint, sz.FanoutEndpoints)
	for i := range eps {
		name := fmt.Sprintf("ep-%03d", i)
		eps[i] = benchEndpoint(name, rcv.URL+"/"+name, keys.keys)
	}
	p, err := startPipeline(ctx, eps)
	if err != nil {
		return res.fail(err)
	}
	defer p.stop()
	c := newPostClient(sz.C)
	defer c.CloseIdleConnections()
	url, hdr := p.EventsURL(), ingestHeader()
	// postOne posts event i (bodies[i] when prepared) and returns the id
	// the 202 gave it; the caller records it in the Ledger.
	var bodies [][]byte
	postOne := func(i int) (string, time.Time, error) {
		var body []byte
		if i < len(bodies) {
			body = bodies[i]
		} else {
			body = benchEvent(i).JSON(false)
		}
		code, rb, err := post(ctx, c, url, "application/json", body, hdr)
		acked := time.Now()
		if err != nil {
			return "", acked, err
		}
		if code != http.StatusAccepted {
			return "", acked, fmt.Errorf("ingest answered %d: %s", code, rb)
		}
		var a struct {
			ID          string `json:"id"`
			Subscribers int    `json:"subscribers"`
		}
		if err := json.Unmarshal(rb, &a); err != nil {
			return "", acked, err
		}
		if a.Subscribers != len(eps) {
			return "", acked, fmt.Errorf("202 says %d subscribers, want %d", a.Subscribers, len(eps))
		}
		return a.ID, acked, nil
	}

	// Every event's deliveries are checked once it has reached every
	// endpoint: the first body of its webhook-id against what was posted,
	// every other endpoint's copy against the first, byte for byte.
	record := func(i int, id string) {
		ev := benchEvent(i)
		ev.ID = id
		rcv.Ledger.Add(ev)
	}

	// Warm-up: the first event waits until every endpoint's consumer exists
	// and opens the connections.
	for w := range 3 {
		rcv.reset(len(eps))
		id, _, err := postOne(2_000_000 + w)
		if err != nil {
			return res.fail(fmt.Errorf("warm-up: %w", err))
		}
		if _, err := rcv.wait(ctx, 60*time.Second); err != nil {
			u, _, _ := rcv.counts()
			return res.fail(fmt.Errorf("warm-up: %d of %d endpoints received: %w", u, len(eps), err))
		}
		record(2_000_000+w, id)
		if err := rcv.check("fan-out warm-up", []string{id}); err != nil {
			return res.fail(err)
		}
	}

	// One event to every endpoint, repeated.
	var one []time.Duration
	for r := range sz.FanoutRepeats {
		rcv.reset(len(eps))
		id, acked, err := postOne(3_000_000 + r)
		if err != nil {
			return res.fail(err)
		}
		last, err := rcv.wait(ctx, 60*time.Second)
		if err != nil {
			u, _, _ := rcv.counts()
			return res.fail(fmt.Errorf("%d of %d endpoints received: %w", u, len(eps), err))
		}
		record(3_000_000+r, id)
		if err := rcv.check("fan-out one event", []string{id}); err != nil {
			return res.fail(err)
		}
		one = append(one, last.Sub(acked))
		time.Sleep(200 * time.Millisecond)
	}
	sortDurations(one)

	// Many events to every endpoint.
	total := sz.FanoutEvents * len(eps)
	bodies = make([][]byte, sz.FanoutEvents)
	for i := range bodies {
		bodies[i] = benchEvent(i).JSON(false)
	}
	ids := make([]string, sz.FanoutEvents)
	rcv.reset(total)
	stopProfile := startProfile("fanout-bulk")
	defer stopProfile()
	cpu0 := processCPU()
	start := time.Now()
	failed, ferr := runPosters(ctx, sz.C, sz.FanoutEvents, func(i int) error {
		var err error
		ids[i], _, err = postOne(i)
		return err
	})
	if failed > 0 {
		return res.fail(fmt.Errorf("%d posts failed, first: %w", failed, ferr))
	}
	last, err := rcv.wait(ctx, waitBudget(total))
	cpu := processCPU() - cpu0
	prof := stopProfile()
	if err != nil {
		u, _, _ := rcv.counts()
		return res.fail(fmt.Errorf("%d of %d deliveries received: %w", u, total, err))
	}
	_, dups, bad := rcv.counts()
	if bad > 0 {
		return res.fail(fmt.Errorf("%d deliveries failed signature verification", bad))
	}
	elapsed := last.Sub(start)
	for i, id := range ids {
		record(i, id)
	}
	if err := rcv.check("fan-out bulk", ids); err != nil {
		return res.fail(err)
	}

	res.info(fmt.Sprintf("4. one event to %d endpoints: 202 to the %dth receipt (median of %d)", len(eps), len(eps), len(one)), ms(percentile(one, 50)))
	res.info(fmt.Sprintf("4. %d events x %d endpoints", sz.FanoutEvents, len(eps)), fmtRate(perSec(total, elapsed), "deliveries/s"))
	res.notef("%d registry entries in one namespace point at the same receiver with different paths (/ep-000 ...), each with its own worker and durable consumer (%s). Single-event runs (after 3 warm-up events): %v. The bulk run posts %d events from %d posters and times the first post to the %dth unique (path, webhook-id) receipt: %s, duplicates %d, this process's CPU %.0f µs per delivery.",
		len(eps), inFlightText(), roundAll(one), sz.FanoutEvents, sz.C, total, elapsed.Round(time.Millisecond), dups, us(cpu)/float64(total))
	res.notef("All %d endpoints share one host:port here, so up to %d deliveries are in flight to one host while the shared client keeps at most 256 idle connections per host: connections beyond that are closed and dialled again, which real endpoints on different hosts would not do.", len(eps), len(eps)*maxInFlight)
	res.notef("The events: %s. After each run, not timed, every delivered body was compared with what was posted (type, data, timestamp) and every endpoint's copy with the first, byte for byte.", payloadText)
	res.notef("The brief sets no target for fan-out; the figures are informational.")
	if prof != "" {
		table, costs, err := breakdownTable(pipelineKinds, []string{fmt.Sprintf("%d events x %d endpoints", sz.FanoutEvents, len(eps))}, []string{prof}, []int{total})
		if err == nil {
			res.extra = "Where the bulk run's CPU went, per delivery, from its CPU profile (" + prof + ", the timed window only):\n\n" + strings.Replace(table, "CPU µs per event", "CPU µs per delivery", 1)
			var sum time.Duration
			for _, c := range costs[0] {
				sum += c
			}
			i := slices.IndexFunc(pipelineKinds, func(k cpuKind) bool { return strings.Contains(k.name, "consumer state files") })
			if sum > 0 && i >= 0 && costs[0][i]*4 > sum {
				res.findingf("With %d endpoints active at once, %.0f%% of the CPU (%.0f µs per delivery) goes to the embedded JetStream server writing each durable consumer's state file (nats-server's consumerFileStore.flushLoop writes a temporary file and renames it, up to about 10 times a second per consumer while its acknowledged position moves). The cost grows with the number of endpoints receiving at the same time, since each has its own durable consumer, rather than with the number of deliveries.",
					len(eps), 100*float64(costs[0][i])/float64(sum), us(costs[0][i]))
			}
		}
	}
	return res
}

func roundAll(d []time.Duration) []time.Duration {
	out := make([]time.Duration, len(d))
	for i, v := range d {
		out[i] = v.Round(100 * time.Microsecond)
	}
	return out
}
