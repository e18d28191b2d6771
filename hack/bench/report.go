package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// report is one run: its environment and every measurement's result.
type report struct {
	command               string
	quick                 bool
	started, finished     time.Time
	numCPU, gomaxprocs    int
	goVersion             string
	loadBefore, loadAfter string
	cpuBefore, cpuAfter   cpuAccount
	sizes                 sizes
	results               []*result
}

// rows flattens the results, with an ERROR row for a measurement that failed.
func (r *report) rows() [][]string {
	var out [][]string
	for _, res := range r.results {
		for _, rw := range res.rows {
			target := rw.target
			if target == "" {
				target = "-"
			}
			out = append(out, []string{rw.figure, rw.value, target, rw.status})
		}
		if res.err != nil {
			msg := oneLine(res.err.Error())
			var ce *contentError
			if errors.As(res.err, &ce) {
				// The mismatches follow the table, in full.
				first, _, _ := strings.Cut(res.err.Error(), "\n")
				msg = strings.TrimSuffix(first, ":") + " (listed below)"
			}
			out = append(out, []string{res.title, "not measured: " + msg, "-", "ERROR"})
		}
	}
	return out
}

func (r *report) printTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "FIGURE\tVALUE\tTARGET\tRESULT\n")
	for _, row := range r.rows() {
		fmt.Fprintf(tw, "%s\n", strings.Join(row, "\t"))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nNumCPU %d, GOMAXPROCS %d, %s, load average %s before, %s after; %s in all.\n",
		r.numCPU, r.gomaxprocs, r.goVersion, r.loadBefore, r.loadAfter, r.finished.Sub(r.started).Round(time.Second))
	if warning := r.busyWarning(); warning != "" {
		fmt.Fprintln(w, "WARNING:", warning)
	}
}

// busyWarning says so when other work competed for the CPU: processes other
// than the harness and its children, or the hypervisor (steal), took 5% or
// more of the machine's CPU time during the run. (The load average is no
// guide: the harness itself keeps every core busy.)
func (r *report) busyWarning() string {
	other, steal, ok := otherCPU(r.cpuBefore, r.cpuAfter)
	if !ok {
		return ""
	}
	capacity := r.finished.Sub(r.started) * time.Duration(r.numCPU)
	if capacity <= 0 {
		return ""
	}
	share := func(d time.Duration) float64 { return 100 * float64(d) / float64(capacity) }
	if share(other) < 5 && share(steal) < 5 {
		return ""
	}
	return fmt.Sprintf("Other work shared the machine during this run: processes other than this harness and the control planes it started used %.1f%% of its CPU time, and the hypervisor took (stole) %.1f%%; rates and latencies here are pessimistic by about that much.",
		share(other), share(steal))
}

// cpuShares describes the run's CPU use by others, for the header.
func (r *report) cpuShares() string {
	other, steal, ok := otherCPU(r.cpuBefore, r.cpuAfter)
	capacity := r.finished.Sub(r.started) * time.Duration(r.numCPU)
	if !ok || capacity <= 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f%% by other processes, %.1f%% stolen by the hypervisor", 100*float64(other)/float64(capacity), 100*float64(steal)/float64(capacity))
}

func (r *report) writeMarkdown(path string) error {
	var b bytes.Buffer
	mode := "full"
	if r.quick {
		mode = "quick (-quick: smaller counts, shorter windows; not the published figures)"
	}
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `hack/bench` (`make bench`); rerun it rather than editing this file. Every figure below comes from the run described here, on loopback, with the real ingestion API, JetStream file store, dispatcher, status writer and, for the status and scale figures, a real kube-apiserver and etcd.\n\n")
	fmt.Fprintf(&b, "Memory and disk over a long run, and through a receiver's outage, are measured by `make soak` instead (the manager binary under a steady load; see [development.md, \"Soak runs\"](development.md#soak-runs)); its published runs are in [Soak runs](#soak-runs) below.\n\n")
	fmt.Fprintf(&b, "| run | |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| command | `%s` |\n", r.command)
	fmt.Fprintf(&b, "| mode | %s |\n", mode)
	fmt.Fprintf(&b, "| date | %s |\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "| Go | %s |\n", r.goVersion)
	fmt.Fprintf(&b, "| `runtime.NumCPU()` | %d |\n", r.numCPU)
	fmt.Fprintf(&b, "| GOMAXPROCS | %d |\n", r.gomaxprocs)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s before, %s after (the harness's own load included) |\n", r.loadBefore, r.loadAfter)
	fmt.Fprintf(&b, "| machine CPU time not this harness's | %s |\n", r.cpuShares())
	z := r.sizes
	fmt.Fprintf(&b, "| sizes | throughput %d events from %d posters (batches of %d); latency %d events/s for %s; fan-out %d endpoints, %d events; status %d events/s to %d endpoints for %s, flush %s; scale %d WebhookConfigs in %d namespaces; pending %d events; filters %d events a pass, %d rounds; ordered delivery %d events a pass, %d rounds |\n",
		z.N, z.C, z.Batch, z.LatencyRate, z.LatencyFor, z.FanoutEndpoints, z.FanoutEvents, z.StatusRate, z.StatusEndpoints, z.StatusFor, z.StatusFlush, z.ScaleConfigs, z.ScaleNamespaces, z.PendingEvents, z.FilterEvents, z.FilterRounds, z.OrderedEvents, z.OrderedRounds)
	fmt.Fprintf(&b, "| duration | %s |\n\n", r.finished.Sub(r.started).Round(time.Second))

	if w := r.busyWarning(); w != "" {
		fmt.Fprintf(&b, "> **%s**\n\n", w)
	}
	fmt.Fprintf(&b, "## Results\n\n| figure | value | target | result |\n| --- | --- | --- | --- |\n")
	for _, row := range r.rows() {
		for i := range row {
			row[i] = strings.ReplaceAll(row[i], "|", "\\|")
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Fprintf(&b, "\nPASS and MISS compare against the targets the operator is built to; \"-\" marks figures with no target, reported for context.\n\n")
	charts, err := writeCharts(filepath.Join(filepath.Dir(path), "benchmarks"), "benchmarks", r.results)
	if err != nil {
		return err
	}
	b.WriteString(charts)

	fmt.Fprintf(&b, "## Method\n\n")
	fmt.Fprintf(&b, "All load stays on 127.0.0.1 and every count and wait is bounded. Each measurement starts its own store, directories, servers and (where used) control plane, and removes them before the next one starts. Posters, receivers and the embedded NATS server share the machine's cores with the operator, as they would on a small node; CPU figures are this harness process's user+system time (getrusage) unless they say otherwise.\n\n")
	for _, res := range r.results {
		fmt.Fprintf(&b, "### %s\n\n", res.title)
		for _, n := range res.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		fmt.Fprintf(&b, "- Took %s; this process used %s of CPU.\n\n", res.elapsed.Round(100*time.Millisecond), res.harnessCPU.Round(100*time.Millisecond))
		if res.extra != "" {
			fmt.Fprintf(&b, "%s\n", res.extra)
		}
	}

	fmt.Fprintf(&b, "## Findings\n\n")
	listed := false
	for _, res := range r.results {
		missed := res.err != nil
		for _, rw := range res.rows {
			missed = missed || rw.status == "MISS"
		}
		if !missed && len(res.findings) == 0 {
			continue
		}
		listed = true
		fmt.Fprintf(&b, "### %s\n\n", res.title)
		if res.err != nil {
			fmt.Fprintf(&b, "- Not measured: %s\n", oneLine(res.err.Error()))
		}
		for _, f := range res.findings {
			fmt.Fprintf(&b, "- %s\n", f)
		}
		if res.profile != "" && missed {
			if top := pprofTop(res.profile); top != "" {
				fmt.Fprintf(&b, "\nCPU profile (this process only; `go tool pprof -top %s`), by flat and by cumulative time:\n\n```\n%s```\n", res.profile, top)
			}
		} else if missed {
			fmt.Fprintf(&b, "- Run with `-cpuprofile /tmp/cpu -only %s` for a CPU profile of this measurement.\n", res.name)
		}
		fmt.Fprintln(&b)
	}
	if !listed {
		fmt.Fprintf(&b, "Every target was met.\n")
	}
	fmt.Fprintf(&b, "\n%s", history)
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// history is the hand-kept record of what measuring changed.
//
//go:embed history.md
var history string

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}
