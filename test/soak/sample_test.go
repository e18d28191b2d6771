//go:build soak

package soak

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// sample is one look at the manager process and the run's counters.
type sample struct {
	// At is the time since posting started (negative before).
	At    time.Duration
	Phase string

	// The run's counters so far.
	Posted, Accepted, Non202, Delivered, Pending int64
	// HealthyDelivered is the healthy endpoint's delivered count, -1 without one.
	HealthyDelivered int64

	// The manager process, from /proc/<pid>: resident memory and its peak
	// (bytes), the anonymous and file-backed parts of RSS (the latter
	// mostly the binary's own pages), open files, user+system CPU time.
	RSS, HWM, RSSAnon, RSSFile int64
	FDs                        int
	CPU                        time.Duration
	// From its metrics endpoint: Go heap in use (bytes) and goroutines, and
	// the memory the Go runtime has mapped less what it returned
	// (go_memstats_sys_bytes - go_memstats_heap_released_bytes), to set
	// beside the anonymous RSS.
	HeapInuse, Goroutines, GoSys, heapReleased int64
	// StoreMsgs is wablast_webhook_queue_depth by stream: events not yet
	// fanned out, messages of pending deliveries, failed deliveries kept,
	// and deliveries waiting for a retry in the on-disk queue.
	StoreEvents, StoreDeliveries, StoreFailed, RetryQueue int64
	// DataDir is the size of the files under --data-dir (bytes).
	DataDir int64

	// Errs says what could not be read.
	Errs []string
}

// probe reads the manager process's figures.
type probe struct {
	pid        func() int
	metricsURL string
	dataDir    string
	client     *http.Client
}

func (p *probe) fill(s *sample) {
	pid := p.pid()
	if err := readStatus(pid, s); err != nil {
		s.Errs = append(s.Errs, err.Error())
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err != nil {
		s.Errs = append(s.Errs, err.Error())
	} else {
		s.FDs = len(ents)
	}
	if cpu, err := readCPU(pid); err != nil {
		s.Errs = append(s.Errs, err.Error())
	} else {
		s.CPU = cpu
	}
	if err := p.readMetrics(s); err != nil {
		s.Errs = append(s.Errs, err.Error())
	}
	s.DataDir = dirSize(p.dataDir)
}

// readStatus reads VmRSS, VmHWM, RssAnon and RssFile from /proc/<pid>/status.
func readStatus(pid int, s *sample) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &s.RSS
		case "VmHWM":
			dst = &s.HWM
		case "RssAnon":
			dst = &s.RSSAnon
		case "RssFile":
			dst = &s.RSSFile
		}
		if !ok || dst == nil {
			continue
		}
		fields := strings.Fields(rest) // "123456 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return fmt.Errorf("/proc/%d/status: %s: unexpected %q", pid, name, rest)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return err
		}
		*dst = kb << 10
	}
	return sc.Err()
}

// readCPU returns the process's user+system time from /proc/<pid>/stat
// (in clock ticks of 1/100 s, which Linux uses for USER_HZ everywhere).
func readCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// start after the last ')', with field 3 (state) first.
	i := strings.LastIndexByte(string(data), ')')
	fields := strings.Fields(string(data[i+1:]))
	if i < 0 || len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, data)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", pid, data)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// readMetrics scrapes the Prometheus text the manager serves.
func (p *probe) readMetrics(s *sample) error {
	resp, err := p.client.Get(p.metricsURL)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", p.metricsURL, resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name, value := line[:i], line[i+1:]
		var dst *int64
		switch name {
		case "go_memstats_heap_inuse_bytes":
			dst = &s.HeapInuse
		case "go_goroutines":
			dst = &s.Goroutines
		case "go_memstats_sys_bytes":
			dst = &s.GoSys
		case "go_memstats_heap_released_bytes":
			dst = &s.heapReleased
		case `wablast_webhook_queue_depth{stream="WEBHOOK_EVENTS"}`:
			dst = &s.StoreEvents
		case `wablast_webhook_queue_depth{stream="WEBHOOK_DELIVERIES"}`:
			dst = &s.StoreDeliveries
		case `wablast_webhook_queue_depth{stream="WEBHOOK_FAILED"}`:
			dst = &s.StoreFailed
		case `wablast_webhook_queue_depth{stream="retry-queue"}`:
			dst = &s.RetryQueue
		default:
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("metrics: %q: %w", line, err)
		}
		*dst = int64(v)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	s.GoSys -= s.heapReleased
	return nil
}

// dirSize is the total size of the regular files under dir; files that
// vanish during the walk (the store compacts) are skipped.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		// A file or directory that cannot be read (or vanished) is skipped
		// and the walk goes on.
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// mib is bytes in MiB.
func mib(b int64) float64 { return float64(b) / (1 << 20) }

// csvHeader and csvRecord are samples.csv's columns.
var csvHeader = []string{"elapsed_s", "phase", "posted", "accepted", "non202_answers", "delivered", "pending", "healthy_delivered",
	"rss_mib", "rss_peak_mib", "rss_anon_mib", "rss_file_mib", "heap_inuse_mib", "go_sys_unreleased_mib", "goroutines", "open_fds", "cpu_s", "data_dir_mib",
	"store_events", "store_delivery_msgs", "store_failed", "retry_queue", "errors"}

func (s sample) csvRecord() []string {
	d := func(v int64) string { return strconv.FormatInt(v, 10) }
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	return []string{f(s.At.Seconds(), 1), s.Phase, d(s.Posted), d(s.Accepted), d(s.Non202), d(s.Delivered), d(s.Pending), d(s.HealthyDelivered),
		f(mib(s.RSS), 2), f(mib(s.HWM), 2), f(mib(s.RSSAnon), 2), f(mib(s.RSSFile), 2), f(mib(s.HeapInuse), 2), f(mib(s.GoSys), 2), d(s.Goroutines), d(int64(s.FDs)), f(s.CPU.Seconds(), 2), f(mib(s.DataDir), 3),
		d(s.StoreEvents), d(s.StoreDeliveries), d(s.StoreFailed), d(s.RetryQueue), strings.Join(s.Errs, "; ")}
}

// writeCSV writes samples as CSV (RFC 4180: phases hold commas).
func writeCSV(path string, samples []sample) error {
	var b bytes.Buffer
	cw := csv.NewWriter(&b)
	_ = cw.Write(csvHeader)
	for _, s := range samples {
		_ = cw.Write(s.csvRecord())
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// clock formats an elapsed time as m:ss.
func clock(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	d = d.Round(time.Second)
	return fmt.Sprintf("%s%d:%02d", sign, int(d.Minutes()), int(d.Seconds())%60)
}
