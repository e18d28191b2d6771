package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// sizes are the counts and windows of one run.
type sizes struct {
	// C posters, N events: throughput (1, 2).
	C, N int
	// Batch is the NDJSON batch size (2).
	Batch int
	// Rounds of the throughput passes, side by side; the median ratio counts (1, 2).
	Rounds int
	// LatencyRate events/s for LatencyFor (3).
	LatencyRate int
	LatencyFor  time.Duration
	// FanoutEndpoints, FanoutEvents and FanoutRepeats (4).
	FanoutEndpoints, FanoutEvents, FanoutRepeats int
	// StatusRate events/s to StatusEndpoints for StatusFor, flushed every StatusFlush (5).
	StatusRate      int
	StatusEndpoints int
	StatusFor       time.Duration
	StatusFlush     time.Duration
	// ScaleConfigs across ScaleNamespaces (6).
	ScaleConfigs, ScaleNamespaces int
	// PendingEvents waiting for a retry (7).
	PendingEvents int
	// LogDeliveries kept in the delivery log, across LogWebhooks (10).
	LogDeliveries, LogWebhooks int
	// FilterEvents posted per pass, in FilterRounds rounds of an unfiltered
	// and a filtered pass, to FanoutEndpoints endpoints (11).
	FilterEvents, FilterRounds int
	// OrderedEvents posted per pass, in OrderedRounds rounds of an
	// Unordered and a PerKey pass (12).
	OrderedEvents, OrderedRounds int
}

func fullSizes() sizes {
	return sizes{
		C: 32, N: 20000, Batch: 100, Rounds: 5,
		LatencyRate: 1000, LatencyFor: 10 * time.Second,
		FanoutEndpoints: 100, FanoutEvents: 100, FanoutRepeats: 5,
		StatusRate: 2000, StatusEndpoints: 10, StatusFor: 15 * time.Second, StatusFlush: 5 * time.Second,
		ScaleConfigs: 5000, ScaleNamespaces: 100,
		PendingEvents: 10000,
		LogDeliveries: 1_000_000, LogWebhooks: 100,
		FilterEvents: 2000, FilterRounds: 5,
		OrderedEvents: 10000, OrderedRounds: 3,
	}
}

func quickSizes() sizes {
	s := fullSizes()
	s.N = 2000
	s.Rounds = 1
	s.LatencyFor = 3 * time.Second
	s.FanoutRepeats = 3
	s.StatusFor, s.StatusFlush = 5*time.Second, time.Second
	s.ScaleConfigs, s.ScaleNamespaces = 500, 10
	s.PendingEvents = 2000
	s.LogDeliveries = 100_000
	s.FilterEvents, s.FilterRounds = 500, 1
	s.OrderedEvents, s.OrderedRounds = 2000, 1
	return s
}

// result is what one measurement reports.
type result struct {
	name, title string
	rows        []row
	// notes describe the method; findings explain misses.
	notes, findings []string
	err             error

	elapsed    time.Duration
	harnessCPU time.Duration
	// profile is the CPU profile summarised under Findings when a target
	// is missed; extra is Markdown shown after the notes.
	profile string
	extra   string
	// charts are drawn as SVGs beside the report and shown under Results.
	charts []chart
}

// row is one figure of the table.
type row struct {
	figure string
	value  string
	target string // "" when the brief sets none
	status string // PASS, MISS, "-" (no target), ERROR
}

func (r *result) add(figure, value, target string, pass bool) {
	st := "PASS"
	if !pass {
		st = "MISS"
	}
	r.rows = append(r.rows, row{figure: figure, value: value, target: target, status: st})
}

func (r *result) info(figure, value string) {
	r.rows = append(r.rows, row{figure: figure, value: value, status: "-"})
}

func (r *result) notef(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (r *result) findingf(format string, args ...any) {
	r.findings = append(r.findings, fmt.Sprintf(format, args...))
}

// fail records an error that stopped the measurement; the figures it could
// not produce are reported as ERROR, never guessed.
func (r *result) fail(err error) *result {
	if r.err == nil {
		r.err = err
	}
	return r
}

// The namespace every standalone measurement posts into, and its static token.
const (
	benchNS     = "bench"
	staticToken = "bench-static-ingest-token-0123456789abcdef"
)

// benchStart tells this run's producer ids from an earlier run's.
var benchStart = time.Now().UnixNano()

// withProducerID is ev with a producer id, unique to this process.
func withProducerID(ev testutil.Posted, i int) testutil.Posted {
	ev.ID = fmt.Sprintf("bench-%d-%d", benchStart, i)
	return ev
}

// postEvents posts body (one JSON event, or NDJSON when batch) to the
// ingestion API and returns the 202 answer.
func postEvents(ctx context.Context, c *http.Client, url string, hdr http.Header, batch bool, body []byte) ([]byte, error) {
	ct := "application/json"
	if batch {
		ct = "application/x-ndjson"
	}
	code, rb, err := post(ctx, c, url, ct, body, hdr)
	if err == nil && code != http.StatusAccepted {
		err = fmt.Errorf("ingest answered %d: %s", code, rb)
	}
	return rb, err
}

// recordAccepted records in ledger what request i posted (posted[i]) with
// the ids its 202 answer (answers[i]) gave, and returns every id in order.
// Passes call it after their timed window.
func recordAccepted(ledger *testutil.Ledger, posted [][]testutil.Posted, answers [][]byte) ([]string, error) {
	var ids []string
	for i := range posted {
		got, err := ledger.Accepted(posted[i], answers[i])
		if err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		ids = append(ids, got...)
	}
	return ids, nil
}

// newPostClient is the client posters share: keep-alive connections for
// every poster, like a well-behaved producer.
func newPostClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        2 * conns,
			MaxIdleConnsPerHost: 2 * conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// post sends one request and returns the status and body.
func post(ctx context.Context, c *http.Client, url, contentType string, body []byte, header http.Header) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }() // read-only: what was read is the answer
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, err
}

// ingestHeader carries the static bearer token.
func ingestHeader() http.Header {
	return http.Header{"Authorization": {"Bearer " + staticToken}}
}

// runPosters calls fn(i) for i in [0, n) from c goroutines and returns the
// number of calls that failed and the first error.
func runPosters(ctx context.Context, c, n int, fn func(i int) error) (int, error) {
	var next, failed atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					failed.Add(1)
					once.Do(func() { first = err })
				}
			}
		})
	}
	wg.Wait()
	return int(failed.Load()), first
}

// percentile returns the p-th percentile (0..100) of sorted, by the
// nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func sortDurations(d []time.Duration) { slices.Sort(d) }

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapCount is this process's heap allocations so far (runtime/metrics).
type heapCount struct{ objects, bytes uint64 }

func (h heapCount) minus(o heapCount) heapCount {
	return heapCount{h.objects - o.objects, h.bytes - o.bytes}
}

// heapAllocs reads the process's cumulative heap allocations; cheap enough to
// call around a timed window.
func heapAllocs() heapCount {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	var h heapCount
	if s[0].Value.Kind() == metrics.KindUint64 {
		h.objects = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		h.bytes = s[1].Value.Uint64()
	}
	return h
}

// pidCPU is the user+system CPU time of another process, from /proc.
func pidCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 14th and 15th fields of the whole line.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

// procStatusKB reads a "VmHWM:"-style field of /proc/<pid>/status in KiB.
func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// loadAvg is /proc/loadavg's first three fields.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// dirSize sums the sizes of the regular files under dir.
func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		// A file or directory that cannot be read (or vanished) is skipped
		// and the walk goes on.
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// waitFor polls check every interval until it returns true or timeout passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, check func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if check() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-time.After(interval):
		case <-ctx.Done():
			return false
		}
	}
}

func perSec(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}

func mib(b int64) string {
	if b < 1<<20 && b > -1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func fmtRate(v float64, unit string) string {
	return strconv.FormatFloat(v, 'f', 0, 64) + " " + unit
}

// cpuAccount is what the machine's CPUs did, from /proc/stat, and what this
// process and its waited-for children (the control planes it started) used.
type cpuAccount struct {
	busy, steal, own time.Duration
	ok               bool
}

// readCPUAccount samples the counters cpuAccount compares.
func readCPUAccount() cpuAccount {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuAccount{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuAccount{}
	}
	var v [8]float64
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[i+1], 64)
	}
	// user nice system idle iowait irq softirq steal, in USER_HZ (100/s).
	tick := func(x float64) time.Duration { return time.Duration(x * float64(10*time.Millisecond)) }
	a := cpuAccount{busy: tick(v[0] + v[1] + v[2] + v[5] + v[6]), steal: tick(v[7]), ok: true}
	var self, children syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) == nil && syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children) == nil {
		a.own = time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
	}
	return a
}

// otherCPU is the CPU time others used between a and b (busy time not
// spent by this process or its children), and the time stolen by the
// hypervisor.
func otherCPU(a, b cpuAccount) (other, steal time.Duration, ok bool) {
	if !a.ok || !b.ok {
		return 0, 0, false
	}
	return max((b.busy-a.busy)-(b.own-a.own), 0), b.steal - a.steal, true
}

// warmUp posts n requests from n posters (send(i) posts the i-th) and waits
// until the receiver has them, so the keep-alive connections on every hop
// are open before anything is timed. The receiver is reset for n first.
// send records what it posted in the receiver's Ledger, and what arrived
// is checked against it.
func warmUp(ctx context.Context, rcv *receiver, n int, send func(i int) error) error {
	rcv.reset(n)
	if _, err := runPosters(ctx, n, n, send); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if _, err := rcv.wait(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	return rcv.check("warm-up", nil)
}

// medianRound sorts rounds by their ratio and returns the median round and
// every round's ratio, in that order, to two decimals.
func medianRound[R any](rounds []R, ratio func(R) float64) (R, []string) {
	slices.SortFunc(rounds, func(a, b R) int { return cmp.Compare(ratio(a), ratio(b)) })
	all := make([]string, len(rounds))
	for i, rd := range rounds {
		all[i] = fmt.Sprintf("%.2f", ratio(rd))
	}
	return rounds[len(rounds)/2], all
}
