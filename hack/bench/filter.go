package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// filterChecked is how many of the endpoints of a filter pass are unpaused
// after its timed window, to deliver every event for the content check.
const filterChecked = 10

// filterPassResult is one timed ingest window of a filter pass.
type filterPassResult struct {
	events  int
	elapsed time.Duration // first post to the last 202
	cpu     time.Duration // this process's CPU over the window
}

func (r filterPassResult) rate() float64 { return perSec(r.events, r.elapsed) }

// filterExpr is endpoint i's spec.filter in the filtered passes: true for
// every bench event (all message events with a messageId and a seq), so
// both passes store the same deliveries, but it reads the type and three
// fields of the data, and differs from endpoint to endpoint.
func filterExpr(i int) string {
	return fmt.Sprintf(`type.startsWith("message.") && has(data.messageId) && data.seq >= 0 && data.to != "ep-%03d"`, i)
}

// measureFilter compares ingest throughput with FanoutEndpoints (100)
// endpoints in one namespace, every one with a spec.filter, against the
// same endpoints without one (issue 21: no more than 10% less).
func measureFilter(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, rcv, err := newSecretAndReceiver()
	if err != nil {
		return res.fail(err)
	}
	defer rcv.close()

	type round struct{ plain, filtered filterPassResult }
	var rounds []round
	base := 0
	for r := range sz.FilterRounds {
		var rd round
		for _, filtered := range []bool{false, true} {
			pr, err := filterPass(ctx, sz, keys, rcv, filtered, base)
			if err != nil {
				return res.fail(fmt.Errorf("round %d, filtered %v: %w", r+1, filtered, err))
			}
			fmt.Fprintf(os.Stderr, "   round %d, filtered %v: %s, %.0f µs of CPU per event\n", r+1, filtered, fmtRate(pr.rate(), "events/s"), us(pr.cpu)/float64(pr.events))
			base += sz.FilterEvents + 10
			if filtered {
				rd.filtered = pr
			} else {
				rd.plain = pr
			}
		}
		rounds = append(rounds, rd)
	}
	ratio := func(rd round) float64 { return rd.filtered.rate() / rd.plain.rate() }
	med, all := medianRound(rounds, ratio)

	// The filters' own cost, without the store: Matching over the 100
	// compiled filters, for each event posted, on one goroutine.
	perEvent, err := matchingCost(sz)
	if err != nil {
		return res.fail(err)
	}

	eps := sz.FanoutEndpoints
	res.add(fmt.Sprintf("11. ingest throughput, %d filtered endpoints / %d unfiltered (median of %d rounds)", eps, eps, len(rounds)),
		fmt.Sprintf("%.2f (%s vs %s)", ratio(med), fmtRate(med.filtered.rate(), "events/s"), fmtRate(med.plain.rate(), "events/s")),
		">= 0.90", ratio(med) >= 0.90)
	cpuRatio := (float64(med.filtered.cpu) / float64(med.filtered.events)) / (float64(med.plain.cpu) / float64(med.plain.events))
	res.info("11. this process's CPU per event, filtered / unfiltered (the median round)", fmt.Sprintf("%.2f (%.0f µs vs %.0f µs)", cpuRatio,
		us(med.filtered.cpu)/float64(med.filtered.events), us(med.plain.cpu)/float64(med.plain.events)))
	res.info(fmt.Sprintf("11. %d filters evaluated per event (endpoint.Matching, one goroutine)", eps), fmt.Sprintf("%.1f µs per event", us(perEvent)))
	res.notef("Each pass starts a fresh pipeline with %d endpoints in one namespace, paused, so that the timed window is ingest alone (each event's %d deliveries are stored at the 202, as for any endpoint, and not sent yet): %d single events without ids from %d posters, timed from the first post to the last 202; every 202 must say %d subscribers. In the filtered pass endpoint i has the filter %s (true for every event, so both passes store the same deliveries). The unfiltered and filtered passes run side by side in each round; the ratios of the rounds: %s. This process's CPU per event in the median round: %.0f µs unfiltered, %.0f µs filtered.",
		eps, eps, sz.FilterEvents, sz.C, eps, "`"+filterExpr(0)+"` (with its own number)", fmtList(all), us(med.plain.cpu)/float64(med.plain.events), us(med.filtered.cpu)/float64(med.filtered.events))
	if ratio(med) < 0.90 {
		res.findingf("The filters' own cost is %.1f µs per event for %d of them (the row above), %.1f%% of the %.0f µs of CPU an unfiltered event takes here: a throughput ratio much further from 1 than that is the machine's other load varying between the passes, which the CPU ratio (%.2f) is less sensitive to.",
			us(perEvent), eps, 100*us(perEvent)/(us(med.plain.cpu)/float64(med.plain.events)), us(med.plain.cpu)/float64(med.plain.events), cpuRatio)
	}
	res.notef("After each timed window, not timed, %d of the endpoints are unpaused and deliver every event of the pass; each body is compared with what was posted (type, data, timestamp). The filter cost figure parses each event's data once and evaluates the %d compiled programs as the ingestion path does (without tracking their cost: for data within the 256 KiB the compile-time estimate assumed, the estimate bounds it).", filterChecked, eps)
	return res
}

func fmtList(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ", "
		}
		out += v
	}
	return out
}

// filterPass runs one pass (see measureFilter): events base.. are posted.
func filterPass(ctx context.Context, sz sizes, keys benchSecret, rcv *receiver, filtered bool, base int) (filterPassResult, error) {
	eps := make([]endpoint.Endpoint, sz.FanoutEndpoints)
	for i := range eps {
		name := fmt.Sprintf("ep-%03d", i)
		eps[i] = benchEndpoint(name, rcv.URL+"/"+name, keys.keys)
		eps[i].Paused = true
		if filtered {
			f, err := endpoint.CompileFilter(benchNS, name, filterExpr(i))
			if err != nil {
				return filterPassResult{}, err
			}
			eps[i].Filter = f
		}
	}
	p, err := startPipeline(ctx, eps)
	if err != nil {
		return filterPassResult{}, err
	}
	defer p.stop()
	c := newPostClient(sz.C)
	defer c.CloseIdleConnections()
	url, hdr := p.EventsURL(), ingestHeader()

	n := sz.FilterEvents + 10 // 10 warm-up events first, not timed
	bodies := make([][]byte, n)
	posted := make([][]testutil.Posted, n)
	for i := range bodies {
		ev := benchEvent(base + i)
		bodies[i], posted[i] = ev.JSON(false), []testutil.Posted{ev}
	}
	answers := make([][]byte, n)
	postOne := func(i int) error {
		code, rb, err := post(ctx, c, url, "application/json", bodies[i], hdr)
		if err != nil {
			return err
		}
		if code != http.StatusAccepted {
			return fmt.Errorf("ingest answered %d: %s", code, rb)
		}
		var a struct {
			Subscribers int `json:"subscribers"`
		}
		if err := json.Unmarshal(rb, &a); err != nil {
			return err
		}
		if a.Subscribers != len(eps) {
			return fmt.Errorf("202 says %d subscribers, want %d", a.Subscribers, len(eps))
		}
		answers[i] = rb
		return nil
	}
	if failed, err := runPosters(ctx, 10, 10, postOne); failed > 0 {
		return filterPassResult{}, fmt.Errorf("warm-up: %w", err)
	}
	name := "filter-unfiltered"
	if filtered {
		name = "filter-filtered"
	}
	stopProfile := startProfile(name)
	cpu0 := processCPU()
	start := time.Now()
	failed, ferr := runPosters(ctx, sz.C, sz.FilterEvents, func(i int) error { return postOne(10 + i) })
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	stopProfile()
	if failed > 0 {
		return filterPassResult{}, fmt.Errorf("%d posts failed, first: %w", failed, ferr)
	}

	// Not timed: unpause a few endpoints, which deliver every event.
	ids, err := recordAccepted(rcv.Ledger, posted, answers)
	if err != nil {
		return filterPassResult{}, err
	}
	rcv.reset(filterChecked * n)
	for i := range filterChecked {
		eps[i].Paused = false
		p.Registry.Upsert(eps[i])
	}
	if _, err := rcv.wait(ctx, waitBudget(filterChecked*n)); err != nil {
		u, _, _ := rcv.counts()
		return filterPassResult{}, fmt.Errorf("%d of %d deliveries received: %w", u, filterChecked*n, err)
	}
	if err := rcv.check(name, ids); err != nil {
		return filterPassResult{}, err
	}
	return filterPassResult{events: sz.FilterEvents, elapsed: elapsed, cpu: cpu}, nil
}

// matchingCost returns the mean time endpoint.Matching takes, on one
// goroutine, to evaluate FanoutEndpoints compiled filters for one event.
func matchingCost(sz sizes) (time.Duration, error) {
	eps := make([]endpoint.Endpoint, sz.FanoutEndpoints)
	for i := range eps {
		f, err := endpoint.CompileFilter(benchNS, fmt.Sprintf("cost-%03d", i), filterExpr(i))
		if err != nil {
			return 0, err
		}
		eps[i] = endpoint.Endpoint{Namespace: benchNS, Name: fmt.Sprintf("cost-%03d", i), Filter: f}
	}
	events := make([]endpoint.FilterEvent, sz.FilterEvents)
	for i := range events {
		ev := benchEvent(i)
		events[i] = endpoint.FilterEvent{Type: ev.Type, Timestamp: benchBase, Data: ev.Data}
	}
	start := time.Now()
	for _, ev := range events {
		if got := endpoint.Matching(eps, ev); len(got) != len(eps) {
			return 0, fmt.Errorf("%d of %d filters matched event %s", len(got), len(eps), ev.Data)
		}
	}
	// The cost series are not kept.
	for i := range eps {
		endpoint.ForgetFilterMetrics(benchNS, eps[i].Name)
	}
	return time.Since(start) / time.Duration(len(events)), nil
}
