package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"
)

// cpuProfilePrefix is -cpuprofile: profiles are written to
// <prefix>.<name>.pprof. Empty disables profiling.
var cpuProfilePrefix string

// startProfile starts a CPU profile named name and returns the function that
// stops it and returns its path ("" when profiling is off or failed). The
// function may be called more than once, so it can also be deferred.
func startProfile(name string) func() string {
	if cpuProfilePrefix == "" {
		return func() string { return "" }
	}
	path := cpuProfilePrefix + "." + name + ".pprof"
	writeAllocs(cpuProfilePrefix + "." + name + ".allocs-before.pprof")
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "   cpu profile:", err)
		return func() string { return "" }
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "   cpu profile:", err)
		_ = f.Close()
		return func() string { return "" }
	}
	return sync.OnceValue(func() string {
		pprof.StopCPUProfile()
		_ = f.Close()
		writeAllocs(cpuProfilePrefix + "." + name + ".allocs.pprof")
		return path
	})
}

// writeAllocs writes the allocation profile so far, after a collection so it
// is current. Two of them around a window give its allocations:
// go tool pprof -sample_index=alloc_space -base <name>.allocs-before.pprof <name>.allocs.pprof
func writeAllocs(path string) {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "   allocation profile:", err)
		return
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "   allocation profile:", err)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "   allocation profile:", err)
	}
}

// cpuKind is where a profile sample's CPU went, decided by the functions on
// its stack: the first kind with a matching frame takes the sample, so the
// kinds are disjoint and add up to the profile's total.
type cpuKind struct {
	name string
	// match reports whether a stack (leaf first, goroutine root last) is this kind.
	match func(stack []string) bool
}

func anyFrame(substrs ...string) func([]string) bool {
	return func(stack []string) bool {
		for _, f := range stack {
			for _, s := range substrs {
				if strings.Contains(f, s) {
					return true
				}
			}
		}
		return false
	}
}

func rootFrame(prefixes ...string) func([]string) bool {
	return func(stack []string) bool {
		if len(stack) == 0 {
			return false
		}
		for _, p := range prefixes {
			if strings.HasPrefix(stack[len(stack)-1], p) {
				return true
			}
		}
		return false
	}
}

// pipelineKinds are the parts of a throughput pass, in matching order.
var pipelineKinds = []cpuKind{
	{"garbage collector (background marking)", anyFrame("runtime.gcBgMarkWorker")},
	{"ingest handler: auth, decode, schema validation, Enqueue (publish and wait for the store's ack)", anyFrame("internal/ingest.(*Server)")},
	{"receiver handler: verify the signature, record", anyFrame("main.(*receiver).serve")},
	{"HTTP servers' connection handling, ingest and receiver (read, parse, write)", anyFrame("net/http.(*conn).serve")},
	{"endpoint workers: sign, POST, hand over the outcome, ack", anyFrame("internal/delivery.(*endpointWorker)")},
	{"outcome recorder: encode outcomes, store them in batches", anyFrame("internal/delivery.(*Dispatcher).runOutcomeRecorder", "internal/delivery.(*Dispatcher).storeOutcomes")},
	{"fan-out (events with an id) and the dispatcher's sync loop", anyFrame("internal/delivery.(*Dispatcher).fanout", "internal/delivery.(*Dispatcher).Start")},
	{"aggregator: decode and fold outcomes, persist stats, ack", anyFrame("internal/stats.(*Aggregator)")},
	{"harness posters: build and send requests", anyFrame("main.runPosters")},
	{"HTTP client connection loops (posters, deliveries)", anyFrame("net/http.(*persistConn)")},
	{"dialing new HTTP connections", anyFrame("net/http.(*Transport).dialConn")},
	{"embedded NATS server: consumer state files (write a temp file, rename), per consumer", anyFrame("nats-server/v2/server.(*consumerFileStore).flushLoop")},
	{"embedded NATS server: protocol, streams, consumers, message file store", rootFrame("github.com/nats-io/nats-server/")},
	{"NATS client library: protocol, pull requests, acks, dispatch", anyFrame("github.com/nats-io/nats%2ego", "github.com/nats-io/nats.go")},
	{"Go scheduler and runtime", rootFrame("runtime.")},
}

// breakdown reads every sample stack of a profile with go tool pprof -traces
// and returns the profile's total CPU and each kind's share, the last entry
// being what no kind matched.
func breakdown(profile string, kinds []cpuKind) (time.Duration, []time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-traces", profile).Output()
	if err != nil {
		return 0, nil, fmt.Errorf("go tool pprof -traces: %w", err)
	}
	costs := make([]time.Duration, len(kinds)+1)
	var total, value time.Duration
	var stack []string
	flush := func() {
		if value == 0 {
			return
		}
		k := slices.IndexFunc(kinds, func(k cpuKind) bool { return k.match(stack) })
		if k < 0 {
			k = len(kinds)
		}
		costs[k] += value
		total += value
		value, stack = 0, stack[:0]
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(line, " ") {
			continue // the header
		}
		if strings.HasSuffix(f[0], ":") {
			continue // a label
		}
		if d, err := parsePprofDuration(f[0]); err == nil && len(f) >= 2 && value == 0 && len(stack) == 0 {
			value = d
			stack = append(stack, f[1])
			continue
		}
		stack = append(stack, f[0])
	}
	flush()
	return total, costs, sc.Err()
}

func parsePprofDuration(s string) (time.Duration, error) {
	s = strings.Replace(s, "mins", "m", 1)
	s = strings.Replace(s, "hrs", "h", 1)
	return time.ParseDuration(s)
}

// breakdownTable renders the CPU per event of each kind for several
// profiles side by side, as Markdown, and returns the per-event costs by
// profile and kind (the last kind being "other").
func breakdownTable(kinds []cpuKind, cols []string, profiles []string, events []int) (string, [][]time.Duration, error) {
	var costs [][]time.Duration
	var totals []time.Duration
	for _, p := range profiles {
		total, c, err := breakdown(p, kinds)
		if err != nil {
			return "", nil, err
		}
		costs = append(costs, c)
		totals = append(totals, total)
	}
	perEventCosts := make([][]time.Duration, len(costs))
	for c := range costs {
		for _, d := range costs[c] {
			perEventCosts[c] = append(perEventCosts[c], d/time.Duration(max(events[c], 1)))
		}
	}
	perEvent := func(d time.Duration, n int) string {
		if n == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)/float64(n))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| CPU µs per event | %s |\n|---%s|\n", strings.Join(cols, " | "), strings.Repeat("|---:", len(cols)))
	for i := range len(kinds) + 1 {
		name := "other"
		if i < len(kinds) {
			name = kinds[i].name
		}
		cells := []string{name}
		for c := range costs {
			cells = append(cells, perEvent(costs[c][i], events[c]))
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}
	cells := []string{"**total**"}
	for c := range costs {
		cells = append(cells, "**"+perEvent(totals[c], events[c])+"**")
	}
	fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	return b.String(), perEventCosts, nil
}

// pprofTop summarises a CPU profile: the 15 heaviest functions by flat time
// and the 25 heaviest by cumulative time.
func pprofTop(profile string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var b strings.Builder
	for _, args := range [][]string{{"-top", "-nodecount=15"}, {"-top", "-cum", "-nodecount=25"}} {
		cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), profile)...)
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		for _, line := range strings.SplitAfter(string(out), "\n") {
			// The binary's name and build ID, and the date, say nothing here.
			if !slices.ContainsFunc([]string{"File: ", "Build ID: ", "Type: ", "Time: "}, func(p string) bool { return strings.HasPrefix(line, p) }) {
				b.WriteString(line)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// processKinds are the parts of the manager binary's CPU in measurement 9,
// in matching order (the first that matches a stack takes it): the delivery
// log's writes and the idempotency index are named apart from the ingest
// handler and the workers that call them.
var processKinds = []cpuKind{
	{"garbage collector (background marking)", anyFrame("runtime.gcBgMarkWorker")},
	{"delivery log: encode and publish Stored and Attempt records", anyFrame("internal/delivery.(*deliveryLog)")},
	{"idempotency index (Pebble): look ids up, record them, its log writer", anyFrame("internal/idempotency.", "cockroachdb/pebble/")},
	{"ingest handler: auth, decode, schema validation, Enqueue (store, wait for the ack)", anyFrame("internal/ingest.(*Server)")},
	{"HTTP server connection handling (read, parse, write)", anyFrame("net/http.(*conn).serve")},
	{"endpoint workers: sign, POST, hand over the outcome, ack", anyFrame("internal/delivery.(*endpointWorker)")},
	{"outcome recorder: encode outcomes, store them in batches", anyFrame("internal/delivery.(*Dispatcher).runOutcomeRecorder", "internal/delivery.(*Dispatcher).storeOutcomes")},
	{"aggregator: decode and fold outcomes, persist stats, ack", anyFrame("internal/stats.(*Aggregator)")},
	{"status writer, controllers and the Kubernetes client", anyFrame("internal/status.", "sigs.k8s.io/controller-runtime", "k8s.io/client-go")},
	{"HTTP client connection loops (deliveries)", anyFrame("net/http.(*persistConn)")},
	{"embedded NATS server: protocol, streams, consumers, message file store", rootFrame("github.com/nats-io/nats-server/")},
	{"NATS client library: protocol, pull requests, acks, dispatch", anyFrame("github.com/nats-io/nats%2ego", "github.com/nats-io/nats.go")},
	{"Go scheduler and runtime", rootFrame("runtime.")},
}
