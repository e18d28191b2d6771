package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// pacedPost is one paced request: when it was due, when its answer came,
// the 202 answer and the id it gave the event (of a single event).
type pacedPost struct {
	due, sent, acked time.Time
	answer           []byte
	id               string
	err              error
}

// pace posts n requests at rate per second from posters goroutines, request
// i due at start + i/rate, and returns when every request was answered.
// body(i) builds request i; parse reads the event id from a 202 body.
func pace(ctx context.Context, c *http.Client, url string, hdr http.Header, contentType string, n, rate, posters int, body func(i int) []byte) []pacedPost {
	out := make([]pacedPost, n)
	jobs := make(chan int, n)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	go func() {
		defer close(jobs)
		for i := range n {
			due := start.Add(time.Duration(i) * interval)
			out[i].due = due
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			jobs <- i
		}
	}()
	var wg sync.WaitGroup
	for range posters {
		wg.Go(func() {
			for i := range jobs {
				out[i].sent = time.Now()
				code, rb, err := post(ctx, c, url, contentType, body(i), hdr)
				out[i].acked = time.Now()
				switch {
				case err != nil:
					out[i].err = err
				case code != http.StatusAccepted:
					out[i].err = fmt.Errorf("ingest answered %d: %s", code, rb)
				default:
					out[i].answer = rb
					var a struct {
						ID string `json:"id"`
					}
					if json.Unmarshal(rb, &a) == nil {
						out[i].id = a.ID
					}
				}
			}
		})
	}
	wg.Wait()
	return out
}

func measureLatency(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, rcv, err := newSecretAndReceiver()
	if err != nil {
		return res.fail(err)
	}
	defer rcv.close()
	p, err := startPipeline(ctx, []endpoint.Endpoint{benchEndpoint("crm", rcv.URL+"/hook", keys.keys)})
	if err != nil {
		return res.fail(err)
	}
	defer p.stop()
	const posters = 64
	c := newPostClient(posters)
	defer c.CloseIdleConnections()
	url, hdr := p.EventsURL(), ingestHeader()

	if err := warmUp(ctx, rcv, posters, func(i int) error {
		ev := benchEvent(1_000_000 + i)
		answer, err := postEvents(ctx, c, url, hdr, false, ev.JSON(false))
		if err == nil {
			_, err = rcv.Ledger.Accepted([]testutil.Posted{ev}, answer)
		}
		return err
	}); err != nil {
		return res.fail(err)
	}

	n := int(float64(sz.LatencyRate) * sz.LatencyFor.Seconds())
	posted := make([][]testutil.Posted, n)
	bodies := make([][]byte, n)
	for i := range bodies {
		posted[i] = []testutil.Posted{benchEvent(i)}
		bodies[i] = posted[i][0].JSON(false)
	}
	rcv.reset(n)
	cpu0 := processCPU()
	posts := pace(ctx, c, url, hdr, "application/json", n, sz.LatencyRate, posters, func(i int) []byte { return bodies[i] })
	cpu := processCPU() - cpu0
	for _, pp := range posts {
		if pp.err != nil {
			return res.fail(fmt.Errorf("a post failed: %w", pp.err))
		}
	}
	if _, err := rcv.wait(ctx, 60*time.Second); err != nil {
		u, _, bad := rcv.counts()
		return res.fail(fmt.Errorf("%d of %d received (%d bad signatures): %w", u, n, bad, err))
	}
	if _, _, bad := rcv.counts(); bad > 0 {
		return res.fail(fmt.Errorf("%d deliveries failed signature verification", bad))
	}
	answers := make([][]byte, n)
	for i, pp := range posts {
		answers[i] = pp.answer
	}
	ids, err := recordAccepted(rcv.Ledger, posted, answers)
	if err != nil {
		return res.fail(err)
	}
	if err := rcv.check("latency", ids); err != nil {
		return res.fail(err)
	}

	times := rcv.times()
	lat := make([]time.Duration, 0, n)
	resp := make([]time.Duration, 0, n)
	late := make([]time.Duration, 0, n)
	e2e := make([]time.Duration, 0, n)
	negative := 0
	// Stretches of consecutive events over 10 ms tell a backlog (the
	// pipeline fell behind for a while) from scattered slow deliveries.
	var longest time.Duration
	var stretchFrom time.Time
	stretches := 0
	for _, pp := range posts {
		at, ok := times["/hook "+pp.id]
		if !ok {
			return res.fail(fmt.Errorf("no delivery recorded for event %q", pp.id))
		}
		d := at.Sub(pp.acked)
		if d < 0 {
			negative++
		}
		lat = append(lat, d)
		if d > 10*time.Millisecond {
			if stretchFrom.IsZero() {
				stretchFrom = pp.due
				stretches++
			}
			longest = max(longest, pp.due.Sub(stretchFrom))
		} else {
			stretchFrom = time.Time{}
		}
		e2e = append(e2e, at.Sub(pp.sent))
		resp = append(resp, pp.acked.Sub(pp.sent))
		late = append(late, pp.sent.Sub(pp.due))
	}
	sortDurations(lat)
	sortDurations(resp)
	sortDurations(late)
	sortDurations(e2e)
	window := posts[n-1].sent.Sub(posts[0].sent)
	offered := perSec(n-1, window)

	p50, p99 := percentile(lat, 50), percentile(lat, 99)
	res.info(fmt.Sprintf("offered rate (%d events over %s, paced)", n, sz.LatencyFor), fmtRate(offered, "events/s"))
	res.info("added latency p50 (receipt minus 202)", ms(p50))
	res.add("3. added latency p99 (receipt minus 202)", ms(p99), "< 10 ms", p99 < 10*time.Millisecond)
	res.charts = append(res.charts, chart{
		file: "latency.svg", title: fmt.Sprintf("Latency at %d events/s, by percentile", sz.LatencyRate),
		alt:    "Line chart: latency in milliseconds by percentile, added (receipt minus 202) and end to end (post to receipt)",
		series: []series{{"added: receipt minus 202", lat}, {"end to end: post to receipt", e2e}},
	})
	res.notef("The events: %s. After the window every delivered body was compared with what was posted (type, data, timestamp), and every event found delivered.", payloadText)
	res.notef("Paced posters (%d goroutines, keep-alive) post event i at start + i/%d s; a request started p50 %s (p99 %s) after it was due. Ingest response time (post to 202) p50 %s, p99 %s.",
		posters, sz.LatencyRate, ms(percentile(late, 50)), ms(percentile(late, 99)), ms(percentile(resp, 50)), ms(percentile(resp, 99)))
	res.notef("End to end, from the start of the post to the receipt: p50 %s, p99 %s. This process used %.2f cores on average during the window (%.0f µs of CPU per event).",
		ms(percentile(e2e, 50)), ms(percentile(e2e, 99)), cpu.Seconds()/window.Seconds(), us(cpu)/float64(n))
	res.notef("Latency is the receiver's clock at the first verified receipt of the event's webhook-id minus the poster's clock when the 202 came back (same process, monotonic clock). The delivery can arrive before the 202 is read: %d of %d latencies were negative and are kept as they are. Max %s.",
		negative, n, ms(lat[len(lat)-1]))
	if p99 >= 10*time.Millisecond {
		shape := "scattered: no stretch of consecutive events over 10 ms lasted 100 ms, so single deliveries were slow rather than the pipeline falling behind"
		if longest >= 100*time.Millisecond {
			shape = fmt.Sprintf("in %d stretches of consecutive events, the longest %s: queueing, the pipeline fell behind the offered rate for a while and drained the backlog afterwards, rather than single deliveries being slow", stretches, longest.Round(time.Millisecond))
		}
		res.findingf("Added latency p99 %s is over 10 ms (p50 %s). The events over 10 ms came %s. At %d events/s this process (pipeline, posters and receiver) kept %.2f cores busy; the posters themselves started p99 %s after they were due, a direct measure of scheduling delay on this machine during the window (load average before the run: see the header).",
			ms(p99), ms(p50), shape, sz.LatencyRate, cpu.Seconds()/window.Seconds(), ms(percentile(late, 99)))
	}
	return res
}
