// Command bench measures the webhook operator end to end, side by side with a
// plain HTTP baseline, prints a table and writes docs/benchmarks.md.
//
//	go run ./hack/bench                           # full run, about 5 minutes on 2 cores
//	go run ./hack/bench -quick                    # smaller counts and shorter windows
//	go run ./hack/bench -out docs/benchmarks.md   # also write the report
//	go run ./hack/bench -only throughput,latency  # a subset
//	go run ./hack/bench -cpuprofile /tmp/cpu      # CPU profiles /tmp/cpu.<measurement>.pprof and allocation profiles beside them
//
// Everything runs on loopback and stops by itself: every count is bounded and
// every wait has a deadline. Every event carries its own data, and after
// each timed window every delivered body is compared with what was posted;
// a measurement with any difference, a missing event or a signature the
// official Standard Webhooks library refuses reports no figure, the report
// is not written, and the run exits 1 (as it does when any measurement
// fails). The status and scale measurements start a local
// control plane from bin/k8s/<version> (make envtest-bin builds it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/wablast/webhook-operator/internal/store"
)

// measurement is one benchmark: its own fresh store, directories and
// servers, all cleaned up before it returns.
type measurement struct {
	name  string
	title string
	run   func(ctx context.Context, sz sizes) *result
	// selfProfile measurements write their own CPU profiles of their timed
	// windows instead of one of the whole measurement.
	selfProfile bool
}

var measurements = []measurement{
	{"throughput", "1-2. End-to-end throughput (single events and NDJSON batches)", measureThroughput, true},
	{"latency", "3. Added latency at a steady rate", measureLatency, false},
	{"fanout", "4. Fan-out to 100 endpoints", measureFanout, true},
	{"status", "5. Status write cost", measureStatus, false},
	{"scale", "6. Scale: WebhookConfigs to Ready", measureScale, false},
	{"pending", "7. Memory and disk per pending event", measurePending, false},
	{"replicas", "8. Throughput with 1, 2 and 3 replicas", measureReplicas, false},
	{"process", "9. The manager binary as a process, single events with ids", measureProcess, false},
	{"deliverylog", "10. Delivery log: a page of one webhook's deliveries out of a full log", measureDeliveryLog, false},
	{"filter", "11. Filters: ingest throughput with 100 filtered endpoints against 100 unfiltered", measureFilter, true},
	{"ordered", "12. Ordered delivery: PerKey with 1,000 keys against Unordered", measureOrdered, true},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run() error {
	quick := flag.Bool("quick", false, "Smaller counts and shorter windows, for development on a busy machine.")
	out := flag.String("out", "", "Write the Markdown report to this file (for example docs/benchmarks.md).")
	only := flag.String("only", "", "Run only these measurements, comma-separated: "+names()+".")
	flag.StringVar(&cpuProfilePrefix, "cpuprofile", "", "Write CPU profiles to <value>.<measurement>.pprof (throughput and fan-out profile their timed windows: <value>.throughput-<pass>.pprof, <value>.fanout-bulk.pprof); summarised in the report; beside each, allocation profiles <name>.allocs-before.pprof and <name>.allocs.pprof (compare with go tool pprof -base).")
	flag.Func("store-sync", `The embedded store's --store-sync in the in-process measurements: "always" or an interval (default 2m); for measuring what a flush before every acknowledgement costs.`, func(v string) (err error) {
		storeSync, err = store.ParseSync(v)
		return err
	})
	concurrency := flag.Int("c", 32, "Concurrent posters in the throughput measurements.")
	events := flag.Int("n", 0, "Events per throughput pass (default 20000, 2000 with -quick).")
	flag.IntVar(&maxInFlight, "max-in-flight", 16, "maxInFlight of the endpoints in the standalone measurements (16 is the CRD default); for exploring what limits throughput.")
	flag.Parse()

	// The in-process manager of the status measurement and client-go log
	// through these; the harness prints only its table.
	ctrl.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard())

	sz := fullSizes()
	if *quick {
		sz = quickSizes()
	}
	sz.C = *concurrency
	if *events > 0 {
		sz.N = *events
	}

	selected := measurements
	if *only != "" {
		selected = nil
		for _, n := range strings.Split(*only, ",") {
			n = strings.TrimSpace(n)
			i := slices.IndexFunc(measurements, func(m measurement) bool { return m.name == n })
			if i < 0 {
				return fmt.Errorf("unknown measurement %q; known: %s", n, names())
			}
			selected = append(selected, measurements[i])
		}
	}

	// A hard bound on the whole run: nothing here may hang a CI job or a laptop.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep := &report{
		command:    commandLine(),
		quick:      *quick,
		started:    time.Now(),
		numCPU:     runtime.NumCPU(),
		gomaxprocs: runtime.GOMAXPROCS(0),
		goVersion:  runtime.Version(),
		loadBefore: loadAvg(),
		cpuBefore:  readCPUAccount(),
		sizes:      sz,
	}
	for _, m := range selected {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(os.Stderr, "== %s\n", m.title)
		start := time.Now()
		stopProfile := func() string { return "" }
		if !m.selfProfile {
			stopProfile = startProfile(m.name)
		}
		cpu0 := processCPU()
		res := m.run(ctx, sz)
		if res == nil {
			res = &result{}
		}
		cpu := processCPU() - cpu0
		if p := stopProfile(); p != "" {
			res.profile = p
		}
		res.name, res.title = m.name, m.title
		res.elapsed, res.harnessCPU = time.Since(start), cpu
		fmt.Fprintf(os.Stderr, "   done in %s (harness process CPU %s)\n", res.elapsed.Round(100*time.Millisecond), cpu.Round(100*time.Millisecond))
		if ce := (*contentError)(nil); errors.As(res.err, &ce) {
			first, _, _ := strings.Cut(res.err.Error(), "\n")
			fmt.Fprintf(os.Stderr, "   error: %s (listed after the table; the run will exit 1 and write no report)\n", strings.TrimSuffix(first, ":"))
		} else if res.err != nil {
			fmt.Fprintf(os.Stderr, "   error: %v\n", res.err)
		}
		rep.results = append(rep.results, res)
	}
	rep.finished = time.Now()
	rep.loadAfter = loadAvg()
	rep.cpuAfter = readCPUAccount()

	rep.printTable(os.Stdout)

	// A measurement whose deliveries were not what was posted reports no
	// figure, and the run writes no report: a rate of wrong deliveries is
	// not a result.
	var failed, contentFailed []string
	for _, res := range rep.results {
		if res.err == nil {
			continue
		}
		failed = append(failed, res.name)
		var ce *contentError
		if errors.As(res.err, &ce) {
			contentFailed = append(contentFailed, res.name)
			fmt.Fprintf(os.Stderr, "\nCONTENT CHECK FAILED in %s: the deliveries were not what was posted.\n%v\n", res.name, res.err)
		}
	}
	if len(contentFailed) > 0 {
		if *out != "" {
			fmt.Fprintf(os.Stderr, "%s not written: the content check failed\n", *out)
		}
		return fmt.Errorf("the content check failed in %s", strings.Join(contentFailed, ", "))
	}
	if *out != "" {
		if err := rep.writeMarkdown(*out); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", *out)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("run stopped early: %w", ctx.Err())
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d measurement(s) failed: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

func names() string {
	var n []string
	for _, m := range measurements {
		n = append(n, m.name)
	}
	return strings.Join(n, ",")
}

// commandLine is how this run was started, as a command to run again.
func commandLine() string {
	args := []string{"go run ./hack/bench"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t\"'") {
			a = fmt.Sprintf("%q", a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}
