package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// measureReplicas runs the single-event throughput pass against 1, 2 and 3
// replicas sharing one NATS JetStream server on a loopback port, as
// managers with --nats-url do: every replica ingests and delivers, the
// endpoint's durable consumer is shared, and one replica (the leader) runs
// the status writer.
func measureReplicas(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, err := newBenchSecret()
	if err != nil {
		return res.fail(err)
	}
	// The embedded store first: one manager, group commit on; then 1, 2
	// and 3 replicas on an external NATS, where every delivery is a message
	// of its own (docs/architecture.md, step 3).
	embedded, err := replicaThroughput(ctx, sz, keys, 0)
	if err != nil {
		return res.fail(fmt.Errorf("embedded store: %w", err))
	}
	var runs []throughputRun
	for n := 1; n <= 3; n++ {
		r, err := replicaThroughput(ctx, sz, keys, n)
		if err != nil {
			return res.fail(fmt.Errorf("%d replicas: %w", n, err))
		}
		runs = append(runs, r)
	}
	res.info(fmt.Sprintf("8. one manager with the embedded store (group commit), single JSON events, C=%d", sz.C), fmtRate(embedded.rate(), "events/s"))
	for i, r := range runs {
		res.info(fmt.Sprintf("8. %d replica(s) on one NATS server, single JSON events, C=%d", i+1, sz.C),
			fmt.Sprintf("%s (x%.2f)", fmtRate(r.rate(), "events/s"), r.rate()/runs[0].rate()))
	}
	res.info("8. what an external NATS costs one manager: its rate / the embedded store's", fmt.Sprintf("%.2f (CPU per event %.0f against %.0f µs)", runs[0].rate()/embedded.rate(), us(runs[0].cpuPerEvent()), us(embedded.cpuPerEvent())))
	res.notef("Each pass starts a fresh nats-server (JetStream, file store, R1) listening on 127.0.0.1 and 1, 2 or 3 replicas connected to it over TCP, each with its own ingestion API, dispatcher and registry holding the same endpoint (%s). Posters send single JSON events round-robin over the replicas' ingestion APIs; one replica runs the status writer and aggregator. Timing and checks are those of the throughput passes, the content check after each pass included.", inFlightText())
	res.notef("With an external NATS a manager does not use group commit (several replicas share an endpoint's consumer, so every delivery is a message of its own) and reaches the store over TCP instead of in-process: the first pass, one manager with the embedded store and the same posters and receiver, shows what that costs: %d events in %s = %.0f events/s; this process's CPU %.0f µs/event; response time p50 %s, p99 %s.",
		embedded.events, embedded.elapsed.Round(time.Millisecond), embedded.rate(), us(embedded.cpuPerEvent()), ms(embedded.ackP50), ms(embedded.ackP99))
	for i, r := range runs {
		res.notef("%d replica(s): %d events in %s = %.0f events/s; this process's CPU %.0f µs/event, %.1f of %d cores busy; response time p50 %s, p99 %s; duplicates %d.",
			i+1, r.events, r.elapsed.Round(time.Millisecond), r.rate(), us(r.cpuPerEvent()), cores(r), runtime.NumCPU(), ms(r.ackP50), ms(r.ackP99), r.dups)
	}
	res.notef("Every replica here shares this machine's %d cores with the NATS server, the posters and the receiver, so more replicas add no CPU: the figures show what sharing the work costs (more connections, pull requests and acknowledgements), not the gain on separate machines. docs/architecture.md (\"Scaling past one machine\") explains where the limits are when replicas have their own cores.", runtime.NumCPU())
	return res
}

// replicaThroughput is one pass with n replicas on a fresh NATS server, or
// (n 0) one manager with the embedded store.
func replicaThroughput(ctx context.Context, sz sizes, keys benchSecret, n int) (throughputRun, error) {
	natsURL := ""
	if n > 0 {
		dir, err := os.MkdirTemp("", "wablast-bench-nats-")
		if err != nil {
			return throughputRun{}, err
		}
		defer func() { _ = os.RemoveAll(dir) }() // best effort: a temporary directory
		ns, err := server.NewServer(&server.Options{
			Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir,
			NoSigs: true, NoLog: true, MaxPayload: 8 << 20,
		})
		if err != nil {
			return throughputRun{}, err
		}
		ns.Start()
		defer ns.Shutdown()
		if !ns.ReadyForConnections(30 * time.Second) {
			return throughputRun{}, fmt.Errorf("nats-server not ready")
		}
		natsURL = ns.ClientURL()
	}

	rcv, err := newReceiver(keys.secret)
	if err != nil {
		return throughputRun{}, err
	}
	defer rcv.close()
	ep := benchEndpoint("crm", rcv.URL+"/hook", keys.keys)
	var urls []string
	var pipes []*pipeline
	defer func() {
		for i := len(pipes) - 1; i >= 0; i-- {
			pipes[i].stop()
		}
	}()
	for i := range max(n, 1) {
		p, err := startPipelineWith(ctx, []endpoint.Endpoint{ep}, pipelineOptions{NATSURL: natsURL, Leader: i == 0})
		if err != nil {
			return throughputRun{}, err
		}
		pipes = append(pipes, p)
		urls = append(urls, p.EventsURL())
	}
	c := newPostClient(sz.C)
	defer c.CloseIdleConnections()
	hdr := ingestHeader()
	send := func(i int, body []byte) ([]byte, error) {
		return postEvents(ctx, c, urls[i%len(urls)], hdr, false, body)
	}

	if err := warmUp(ctx, rcv, sz.C, func(i int) error {
		ev := benchEvent(sz.N + i)
		answer, err := send(i, ev.JSON(false))
		if err == nil {
			_, err = rcv.Ledger.Accepted([]testutil.Posted{ev}, answer)
		}
		return err
	}); err != nil {
		return throughputRun{}, err
	}
	posted := make([][]testutil.Posted, sz.N)
	bodies := make([][]byte, sz.N)
	for i := range bodies {
		posted[i] = []testutil.Posted{benchEvent(i)}
		bodies[i] = posted[i][0].JSON(false)
	}
	answers := make([][]byte, sz.N)
	rcv.reset(sz.N)
	run, err := timedPass(ctx, rcv, sz.C, sz.N, sz.N, "", func(i int) error {
		var err error
		answers[i], err = send(i, bodies[i])
		return err
	})
	if err != nil {
		return throughputRun{}, err
	}
	ids, err := recordAccepted(rcv.Ledger, posted, answers)
	if err != nil {
		return throughputRun{}, err
	}
	return run, rcv.check(fmt.Sprintf("%d replicas", n), ids)
}
