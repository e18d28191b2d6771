package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"os"
	"strconv"
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
			out = append(out, []string{res.title, "not measured: " + oneLine(res.err.Error()), "-", "ERROR"})
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

// busyWarning says so when other work competed for the CPU: the 1-minute
// load average before or after the run was over half the CPU count.
func (r *report) busyWarning() string {
	busy := false
	for _, l := range []string{r.loadBefore, r.loadAfter} {
		if f := strings.Fields(l); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil && v > float64(r.numCPU)/2 {
				busy = true
			}
		}
	}
	if !busy {
		return ""
	}
	return fmt.Sprintf("The machine was busy with other work during this run (1-minute load average %s before, %s after, on %d CPUs), so rates and latencies here are pessimistic; rerun on a quiet machine for published figures.",
		strings.Fields(r.loadBefore)[0], strings.Fields(r.loadAfter)[0], r.numCPU)
}

func (r *report) writeMarkdown(path string) error {
	var b bytes.Buffer
	mode := "full"
	if r.quick {
		mode = "quick (-quick: smaller counts, shorter windows; not the published figures)"
	}
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `hack/bench` (`make bench`); rerun it rather than editing this file. Every figure below comes from the run described here, on loopback, with the real ingestion API, JetStream file store, dispatcher, status writer and, for the status and scale figures, a real kube-apiserver and etcd.\n\n")
	fmt.Fprintf(&b, "| run | |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| command | `%s` |\n", r.command)
	fmt.Fprintf(&b, "| mode | %s |\n", mode)
	fmt.Fprintf(&b, "| date | %s |\n", r.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "| Go | %s |\n", r.goVersion)
	fmt.Fprintf(&b, "| `runtime.NumCPU()` | %d |\n", r.numCPU)
	fmt.Fprintf(&b, "| GOMAXPROCS | %d |\n", r.gomaxprocs)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s before, %s after |\n", r.loadBefore, r.loadAfter)
	z := r.sizes
	fmt.Fprintf(&b, "| sizes | throughput %d events from %d posters (batches of %d); latency %d events/s for %s; fan-out %d endpoints, %d events; status %d events/s to %d endpoints for %s, flush %s; scale %d WebhookConfigs in %d namespaces; pending %d events |\n",
		z.N, z.C, z.Batch, z.LatencyRate, z.LatencyFor, z.FanoutEndpoints, z.FanoutEvents, z.StatusRate, z.StatusEndpoints, z.StatusFor, z.StatusFlush, z.ScaleConfigs, z.ScaleNamespaces, z.PendingEvents)
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
	any := false
	for _, res := range r.results {
		missed := res.err != nil
		for _, rw := range res.rows {
			missed = missed || rw.status == "MISS"
		}
		if !missed && len(res.findings) == 0 {
			continue
		}
		any = true
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
	if !any {
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
