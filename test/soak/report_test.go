//go:build soak

package soak

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// epResult is what one endpoint received.
type epResult struct {
	name string
	// lost are accepted events never answered 2xx although the receiver
	// saw fewer than the policy's maxAttempts requests for them; lostIDs
	// the first few, with their requests. gaveUp are accepted events never
	// answered 2xx after maxAttempts requests, all answered 503: they
	// failed for good by the policy (kept for replay), which is the
	// receiver's doing, not a loss.
	lost, gaveUp       int
	lostIDs, gaveUpIDs []string
	// mismatches are delivered bodies that are not what was posted, unknown
	// webhook-ids no producer posted; contentErr is Receiver.Check's
	// error (these, bad signatures, later copies that differ), checkAllErr
	// Receiver.CheckAll's over the Ledger's ids (also events never arrived).
	mismatches, unknown, badSig int
	contentErr, checkAllErr     error
	// dupIDs were answered 2xx more than once, dupExtra times beyond the first.
	dupIDs, dupExtra int
	answers          map[int]int
	requests         int64
	// firstArrival is 202 → first verified arrival; firstOK 202 → first 2xx.
	firstArrival, firstOK latencies
	// drain is the last first-2xx after the last 202; backlog the last
	// first-2xx of the events accepted before the outage ended, after its end.
	drain, backlog time.Duration
	hasBacklog     bool
	// slowest is the event delivered last after its 202, with its requests.
	slowest string
}

// results are the run's end results.
type results struct {
	accepted                                         int
	posted, skipped, neverAccepted, rejected, non202 int64
	codeSummary                                      string
	examples, ledgerErrs                             []string
	respTimes                                        latencies
	acceptRate                                       float64
	endpoints                                        []epResult
	end, afterGC                                     sample
	profiles                                         []string
	verdict                                          string
}

func (r *run) results() results {
	p := r.prod
	p.mu.Lock()
	res := results{
		examples:   slices.Clone(p.examples),
		ledgerErrs: slices.Clone(p.ledgerErrs),
		respTimes:  summarise(p.respTimes),
	}
	p.mu.Unlock()
	res.posted, res.skipped, res.neverAccepted, res.rejected, res.non202 = p.posted.Load(), p.skipped.Load(), p.neverAccepted.Load(), p.rejected.Load(), p.non202.Load()
	res.codeSummary = p.codeSummary()
	ids := r.ledger.IDs()
	res.accepted = len(ids)
	if d := r.postingEnd.Sub(r.start).Seconds(); d > 0 {
		res.acceptRate = float64(p.accepted.Load()) / d
	}
	acceptedAt := p.acceptedTimes()
	lastAccept := time.Unix(0, p.lastAccept.Load())
	res.endpoints = append(res.endpoints, r.endpointResult(r.crm, ids, acceptedAt, lastAccept))
	if r.healthy != nil {
		res.endpoints = append(res.endpoints, r.endpointResult(r.healthy, ids, acceptedAt, lastAccept))
	}
	return res
}

func (r *run) endpointResult(e *endpoint, ids []string, acceptedAt map[string]time.Time, lastAccept time.Time) epResult {
	out := epResult{name: e.name, answers: e.answerCounts(), requests: e.requests.Load(), badSig: e.rc.BadSignatures()}
	firstOK := e.firstOKs()
	arrivals := e.rc.FirstArrivals()
	requests := e.rc.Requests()
	maxAttempts := int(r.policy.MaxAttempts)
	outageEnd := r.start.Add(r.cfg.Outage)
	var fa, fo []time.Duration
	var lastOK, backlogEnd time.Time
	var slowest time.Duration
	for _, id := range ids {
		okAt, delivered := firstOK[id]
		if !delivered {
			desc := fmt.Sprintf("%s (%d requests)", id, requests[id])
			if maxAttempts > 0 && requests[id] >= maxAttempts {
				out.gaveUp++
				if len(out.gaveUpIDs) < 5 {
					out.gaveUpIDs = append(out.gaveUpIDs, desc)
				}
				continue
			}
			out.lost++
			if len(out.lostIDs) < 5 {
				out.lostIDs = append(out.lostIDs, desc)
			}
			continue
		}
		if okAt.After(lastOK) {
			lastOK = okAt
		}
		acc, ok := acceptedAt[id]
		if !ok {
			continue
		}
		fo = append(fo, okAt.Sub(acc))
		if d := okAt.Sub(acc); d > slowest {
			slowest = d
			out.slowest = fmt.Sprintf("%s: delivered %s after its 202; %d requests in all", id, roundDur(d), requests[id])
		}
		if arr, ok := arrivals[id]; ok {
			fa = append(fa, arr.Sub(acc))
		}
		if r.cfg.Outage > 0 && e == r.crm && acc.Before(outageEnd) && okAt.After(backlogEnd) {
			backlogEnd = okAt
		}
	}
	for id := range arrivals {
		posted, ok := r.ledger.Get(id)
		if !ok {
			out.unknown++
			continue
		}
		if body, ok := e.rc.Body(id); ok && testutil.CheckBody(posted, body) != nil {
			out.mismatches++
		}
	}
	out.contentErr = e.rc.Check()
	out.checkAllErr = e.rc.CheckAll(ids)
	out.dupIDs, out.dupExtra = e.duplicates()
	out.firstArrival, out.firstOK = summarise(fa), summarise(fo)
	if !lastOK.IsZero() {
		out.drain = max(0, lastOK.Sub(lastAccept))
	}
	if !backlogEnd.IsZero() {
		out.backlog, out.hasBacklog = max(0, backlogEnd.Sub(outageEnd)), true
	}
	return out
}

// verdict says whether RSS stayed flat after the warm-up: its highest
// sample after the reference window at most 20% above the highest in it,
// and every sample under 256 MiB. The reference window is the first 5
// minutes after the warm-up (a third of what follows the warm-up in a
// shorter run): samples are 30 s apart and the Go heap goes through a GC
// cycle every few seconds at the soak's rate, so one sample lands anywhere
// between the cycle's low and its high (the same build measured +10% and
// +24% against its 2:00 sample in two runs, both without growth); the
// highest of ten is near the top, which is what growth would raise. The
// verdict also gives the highest sample against the first one after the
// warm-up, the measure of earlier runs.
func (r *run) verdict(samples []sample, res results) string {
	warm, shortened := r.cfg.warmup()
	var after []*sample
	for i := range samples {
		if s := &samples[i]; s.At >= warm && s.RSS > 0 {
			after = append(after, s)
		}
	}
	lost, gaveUp, mismatched, pass := 0, 0, 0, "PASS"
	for _, e := range res.endpoints {
		lost, gaveUp = lost+e.lost, gaveUp+e.gaveUp
		mismatched += e.mismatches + e.unknown + e.badSig
		if e.lost > 0 || e.contentErr != nil {
			pass = "FAIL"
		}
	}
	if len(res.ledgerErrs) > 0 {
		pass = "FAIL"
	}
	events := fmt.Sprintf("lost events %d, content mismatches %d: %s", lost, mismatched, pass)
	if gaveUp > 0 {
		events = fmt.Sprintf("failed for good by the policy %d (every attempt answered 503), ", gaveUp) + events
	}
	if len(after) == 0 {
		return "VERDICT: RSS flat: unknown (no sample after the warm-up); " + events
	}
	f := flatness(after, warm)
	yes := "yes"
	if !f.flat {
		yes = "NO"
	}
	warmNote := ""
	if shortened {
		warmNote = " (a short run: half the posting window instead of 2 minutes, before the 2-minute id windows fill, so indicative only)"
	}
	return fmt.Sprintf("VERDICT: RSS flat: %s. After the first %s%s RSS stayed between %.1f and %.1f MiB; its highest after %s, %.1f MiB, is %+.1f%% against the highest from %s to %s, %.1f MiB (limit +20%%); under 256 MiB: %t (against the first sample after the warm-up, %.1f MiB at %s: %+.1f%% at most); %s",
		yes, warm, warmNote, mib(f.min), mib(f.max), clock(f.refEnd), mib(f.laterMax), 100*(float64(f.laterMax)/float64(f.refMax)-1),
		clock(warm), clock(f.refEnd), mib(f.refMax), f.max < 256<<20,
		mib(after[0].RSS), clock(after[0].At), 100*(float64(f.max)/float64(after[0].RSS)-1), events)
}

// rssFlatness is what verdict decides from.
type rssFlatness struct {
	flat                       bool
	min, max, refMax, laterMax int64
	refEnd                     time.Duration
}

// flatness compares the highest RSS after the reference window with the
// highest in it (see verdict); after are the samples from the warm-up on.
func flatness(after []*sample, warm time.Duration) rssFlatness {
	last := after[len(after)-1].At
	f := rssFlatness{refEnd: warm + min(5*time.Minute, (last-warm)/3), min: after[0].RSS}
	for _, s := range after {
		f.min, f.max = min(f.min, s.RSS), max(f.max, s.RSS)
		if s.At <= f.refEnd {
			f.refMax = max(f.refMax, s.RSS)
		} else {
			f.laterMax = max(f.laterMax, s.RSS)
		}
	}
	if f.laterMax == 0 { // too few samples to have a later one
		f.laterMax = f.refMax
	}
	f.flat = float64(f.laterMax) <= 1.2*float64(f.refMax) && f.max < 256<<20
	return f
}

// report renders report.md; res.verdict must be set.
func (r *run) report(res results) []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	r.mu.Lock()
	samples := slices.Clone(r.samples)
	peakProfile, peakAt := r.peakProfile, r.peakProfileAt
	r.mu.Unlock()

	w("# Soak run %s\n\n", r.start.UTC().Format("2006-01-02 15:04 UTC"))
	w("Written by `make soak` (test/soak). The manager binary ran as its own process against a local control plane (envtest's etcd and kube-apiserver); posters, receivers and the control plane shared the machine with it.\n\n")
	w("## Parameters\n\n| parameter | value |\n| --- | --- |\n")
	ids := "yes: every event carries a producer `id` (idempotency key: looked up in and written to the on-disk idempotency index, its deliveries stored at once)"
	if !r.cfg.IDs {
		ids = "no: the API generates the ids (deliveries stored at once, no fan-out)"
	}
	w("| posting | %s at %g events/s, open loop (paced every 10 ms), %d concurrent posters, single JSON events (testutil.VariedEvents) |\n", r.cfg.Duration, r.cfg.Rate, r.cfg.Posters)
	w("| producer ids (`SOAK_IDS`) | %s |\n", ids)
	w("| receiver 503 share (`SOAK_FAIL`) | %g of requests, else 204 |\n", r.cfg.Fail)
	if r.cfg.Outage > 0 {
		w("| outage (`SOAK_OUTAGE`) | %s: the receiver answered 503 to every request from the start of posting, then recovered |\n", r.cfg.Outage)
	} else {
		w("| outage (`SOAK_OUTAGE`) | none |\n")
	}
	pol := r.policy
	w("| delivery policy (`SOAK_POLICY`) | %s: timeoutSeconds %d, maxAttempts %d, initialBackoffSeconds %d, maxBackoffSeconds %d, maxAgeSeconds %d, maxInFlight %d (as stored) |\n",
		r.cfg.Policy, pol.TimeoutSeconds, pol.MaxAttempts, pol.InitialBackoffSeconds, pol.MaxBackoffSeconds, pol.MaxAgeSeconds, pol.MaxInFlight)
	if r.healthy != nil {
		w("| second endpoint (`SOAK_HEALTHY`) | `healthy`: every event also goes to a receiver that always answers 204 |\n")
	} else {
		w("| second endpoint (`SOAK_HEALTHY`) | none |\n")
	}
	w("| manager flags | `--egress-allow-cidrs 127.0.0.0/8 --status-flush-interval 5s`, metrics and pprof on loopback, `--data-dir` in a temporary directory |\n")
	w("| sampling | every %s, and at the start and the end |\n", r.cfg.SampleEvery)
	w("| drain bound | %s after posting stopped |\n", r.cfg.drainBound())
	w("| machine | %d CPUs, %s, load average %s before, %s after |\n", runtime.NumCPU(), runtime.Version(), r.loadBefore, loadAverage())
	w("| output | `%s` |\n\n", r.cfg.Out)

	w("## Samples\n\n")
	w("Time is since posting started. Pending is accepted but not yet answered 2xx by `crm`. Store msgs are `wablast_webhook_queue_depth`: events not yet fanned out / messages of pending deliveries (one message may hold several) / deliveries waiting for a retry in the on-disk retry queue. ")
	if r.cfg.IDs {
		w("With producer ids the on-disk idempotency index keeps every id for the idempotency window (24 h), so the data directory grows with the events posted (30 to 100 bytes an id, see docs/operations.md), by design; in memory the index keeps a fixed-size cache and memtables.")
	} else {
		w("Without producer ids the store holds only pending deliveries and outcomes, so the data directory follows the backlog.")
	}
	w("\n\n")
	healthyCol := r.healthy != nil
	w("| time | phase | posted | accepted | delivered | pending |")
	if healthyCol {
		w(" healthy delivered |")
	}
	w(" RSS MiB | heap in use MiB | goroutines | open files | data dir MiB | store msgs | CPU s |\n|---|---|--:|--:|--:|--:|")
	if healthyCol {
		w("--:|")
	}
	w("--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range samples {
		w("| %s | %s | %d | %d | %d | %d |", clock(s.At), s.Phase, s.Posted, s.Accepted, s.Delivered, s.Pending)
		if healthyCol {
			w(" %d |", s.HealthyDelivered)
		}
		w(" %.1f | %.1f | %d | %d | %.1f | %d / %d / %d | %.1f |\n", mib(s.RSS), mib(s.HeapInuse), s.Goroutines, s.FDs, mib(s.DataDir), s.StoreEvents, s.StoreDeliveries, s.RetryQueue, s.CPU.Seconds())
	}
	for _, s := range samples {
		if len(s.Errs) > 0 {
			w("\nAt %s: %s\n", clock(s.At), strings.Join(s.Errs, "; "))
		}
	}

	w("\n## Results\n\n| figure | value |\n| --- | --- |\n")
	w("| events posted | %d (one before the clock started, to check the token) |\n", res.posted)
	w("| accepted (202) | %d; %.1f events/s over the posting window |\n", res.accepted, res.acceptRate)
	w("| answers to posts | %s |\n", orNone(res.codeSummary))
	w("| answers other than 202 | %d (503 and 429 retried, same id when ids are on) |\n", res.non202)
	w("| not posted: posters behind | %d |\n", res.skipped)
	w("| given up after %s of retries / rejected | %d / %d |\n", retryFor, res.neverAccepted, res.rejected)
	w("| 202 answer time | %s |\n", res.respTimes)
	for _, e := range res.endpoints {
		n := "`" + e.name + "`"
		w("| %s: **lost** (accepted, never answered 2xx, fewer than maxAttempts requests seen) | **%d**%s |\n", n, e.lost, listed(e.lostIDs))
		w("| %s: failed for good by the policy (all maxAttempts requests answered 503; kept for replay) | %d%s |\n", n, e.gaveUp, listed(e.gaveUpIDs))
		check := "CheckAll ok"
		if e.checkAllErr != nil {
			check = "CheckAll: " + strings.ReplaceAll(firstLine(e.checkAllErr.Error()), "|", "\\|")
		}
		w("| %s: **content mismatches** (Receiver.CheckAll over the ledger's ids) | **%d** (unknown ids %d, bad signatures %d; %s) |\n", n, e.mismatches, e.unknown, e.badSig, check)
		w("| %s: duplicates | %d events answered 2xx more than once, %d extra 2xx answers |\n", n, e.dupIDs, e.dupExtra)
		w("| %s: requests verified | %d (%s) |\n", n, e.requests, answerSummary(e.answers))
		w("| %s: first-delivery latency, 202 → first verified arrival | %s |\n", n, e.firstArrival)
		w("| %s: 202 → first 2xx answer | %s |\n", n, e.firstOK)
		if e.slowest != "" {
			w("| %s: the slowest event | %s |\n", n, e.slowest)
		}
		w("| %s: drain after the last 202 | %s |\n", n, roundDur(e.drain))
		if e.hasBacklog {
			w("| %s: outage backlog (events accepted before it ended): last first delivery | %s after the outage ended |\n", n, roundDur(e.backlog))
		}
	}
	if r.drainNote != "" {
		w("| the wait for deliveries | stopped: %s |\n", r.drainNote)
	}
	w("| waited after posting stopped | %s |\n", roundDur(r.drainEnd.Sub(r.postingEnd)))
	first, end := firstSample(samples), res.end
	peak := sample{}
	for _, s := range samples {
		if s.RSS > peak.RSS {
			peak = s
		}
	}
	var maxHeap, maxG, maxFD, maxDisk int64
	for _, s := range samples {
		maxHeap, maxG, maxFD, maxDisk = max(maxHeap, s.HeapInuse), max(maxG, s.Goroutines), max(maxFD, int64(s.FDs)), max(maxDisk, s.DataDir)
	}
	w("| manager RSS | %.1f MiB at the start, peak sample %.1f MiB at %s, %.1f MiB at the end; VmHWM %.1f MiB |\n", mib(first.RSS), mib(peak.RSS), clock(peak.At), mib(end.RSS), mib(end.HWM))
	w("| Go heap in use | %.1f MiB at the start, max %.1f MiB, %.1f MiB at the end |\n", mib(first.HeapInuse), mib(maxHeap), mib(end.HeapInuse))
	if r.cfg.Outage > 2*time.Minute {
		rss, heap, n := backlogSlopes(samples, 2*time.Minute, r.cfg.Outage)
		if n >= 3 {
			w("| memory per pending delivery during the outage (least-squares slope over the %d samples from 2:00 to the outage's end, against the pending count) | RSS %.0f bytes, Go heap in use %.0f bytes |\n", n, rss, heap)
		}
	}
	g := res.afterGC
	w("| after the heap profile's forced GC | heap in use %.1f MiB; RSS %.1f MiB = %.1f MiB anonymous + %.1f MiB file-backed (mostly the binary's own pages, which the kernel can drop); the Go runtime has %.1f MiB mapped and not released (go_memstats_sys_bytes less heap released; mapped is not all resident) |\n",
		mib(g.HeapInuse), mib(g.RSS), mib(g.RSSAnon), mib(g.RSSFile), mib(g.GoSys))
	w("| goroutines | %d at the start, max %d, %d at the end |\n", first.Goroutines, maxG, end.Goroutines)
	w("| open files | %d at the start, max %d, %d at the end |\n", first.FDs, maxFD, end.FDs)
	w("| data dir | %.1f MiB at the start, max %.1f MiB, %.1f MiB at the end |\n", mib(first.DataDir), mib(maxDisk), mib(end.DataDir))
	if res.accepted > 0 {
		cpu := end.CPU - first.CPU
		w("| manager CPU time | %s during the run, %.0f µs per accepted event |\n", cpu.Round(100*time.Millisecond), float64(cpu.Microseconds())/float64(res.accepted))
	}
	if len(res.examples) > 0 {
		w("\nFirst answers other than 202:\n\n```\n%s\n```\n", strings.Join(res.examples, "\n"))
	}
	for _, e := range res.endpoints {
		if e.checkAllErr != nil {
			w("\n`%s`: Receiver.CheckAll:\n\n```\n%s\n```\n", e.name, e.checkAllErr)
		}
	}
	if len(res.ledgerErrs) > 0 {
		w("\n202 answers that did not name the event posted (%d), first: %s\n", len(res.ledgerErrs), res.ledgerErrs[0])
	}

	w("\n## Verdict\n\n%s\n\n", res.verdict)
	w("The test fails only on a lost event or a content mismatch; memory is reported, not asserted. An event whose every attempt (maxAttempts) the receiver answered 503 failed for good by the policy: it is reported, not counted as lost.\n\n")
	w("![RSS and data directory size over time](chart.svg)\n\n")

	w("## Heap profiles\n\n")
	if peakProfile != "" {
		w("Just before the outage ended (%s), `go tool pprof -top -inuse_space %s`%s:\n\n```\n%s```\n\n", peakAt, filepath.Base(peakProfile), blockBuffers(peakProfile), pprofTop(peakProfile, 15))
	}
	if slices.Contains(res.profiles, "heap.pb.gz") {
		heap := filepath.Join(r.cfg.Out, "heap.pb.gz")
		w("At the end, after the drain, `go tool pprof -top -inuse_space heap.pb.gz`%s:\n\n```\n%s```\n\n", blockBuffers(heap), pprofTop(heap, 15))
	}
	w("## Files\n\n")
	w("- `samples.csv`: every sample, more columns than the table (VmHWM, failed deliveries kept, errors)\n")
	w("- `chart.svg`: RSS and the data directory's size over time\n")
	w("- `manager.log`: the manager's log\n")
	for _, f := range res.profiles {
		w("- `%s`: from the manager's `/debug/pprof/` at the end\n", f)
	}
	if peakProfile != "" {
		w("- `%s`: the heap just before the outage ended\n", filepath.Base(peakProfile))
	}
	return b.Bytes()
}

// listed is ids as ": a, b", or "" for none.
func listed(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ": " + strings.Join(ids, ", ")
}

func firstSample(s []sample) sample {
	if len(s) == 0 {
		return sample{}
	}
	return s[0]
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func answerSummary(m map[int]int) string {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d ×%d", c, m[c])
	}
	return orNone(strings.Join(parts, ", "))
}

// blockBuffers says how much of a heap profile the embedded NATS server's
// file store message block buffers hold (its pools, allocated through
// getMsgBlockBuf, which pprof shows as server.init.funcN), or "".
func blockBuffers(file string) string {
	out, err := exec.Command(goCommand(), "tool", "pprof", "-top", "-inuse_space", "-focus", "getMsgBlockBuf", file).CombinedOutput()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		// "Showing nodes accounting for 20MB, 63.05% of 32MB total"
		if rest, ok := strings.CutPrefix(l, "Showing nodes accounting for "); ok {
			return " (" + strings.TrimSpace(rest) + " in the embedded NATS file store's message block buffers, `server.init.funcN` below, from `getMsgBlockBuf`)"
		}
	}
	return ""
}

func goCommand() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}

// pprofTop returns the header and the first n rows of `go tool pprof -top
// -inuse_space file`.
func pprofTop(file string, n int) string {
	out, err := exec.Command(goCommand(), "tool", "pprof", "-top", "-inuse_space", file).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		if strings.Contains(l, "flat%") {
			lines = lines[:min(len(lines), i+1+n)]
			break
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// backlogSlopes fits RSS and heap in use against the pending count, over
// the samples taken from `from` until `to` (the outage), by least squares:
// what memory each delivery waiting for a retry costs.
func backlogSlopes(samples []sample, from, to time.Duration) (rss, heap float64, n int) {
	var xs, ys, hs []float64
	for _, s := range samples {
		if s.At < from || s.At > to {
			continue
		}
		xs = append(xs, float64(s.Pending))
		ys = append(ys, float64(s.RSS))
		hs = append(hs, float64(s.HeapInuse))
	}
	return slope(xs, ys), slope(xs, hs), len(xs)
}

func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
