//go:build soak

package soak

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// run is one soak run: its settings, the processes and what was seen.
type run struct {
	t      *testing.T
	cfg    config
	env    *testutil.Env
	ns     string
	m      *testutil.ManagerProcess
	probe  *probe
	prod   *producer
	ledger *testutil.Ledger
	crm    *endpoint
	// healthy is the second endpoint, nil unless cfg.Healthy.
	healthy *endpoint

	pprofAddr, dataDir string
	policy             webhooksv1alpha1.DeliveryPolicy // as the API server stored it
	loadBefore         string

	start, postingEnd, drainEnd time.Time
	// drainNote says why the wait for deliveries ended, when it was not
	// because everything arrived.
	drainNote string
	// peakProfile is the heap profile taken just before the outage ended.
	peakProfile, peakProfileAt string

	// stopSampling stops the sampler and waits for it (idempotent).
	stopSampling func()

	mu      sync.Mutex
	samples []sample
}

// TestSoak runs the manager binary under cfg's load and writes the report;
// it fails when an accepted event is lost or arrives with other content.
func TestSoak(t *testing.T) {
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: %s of posting at %g events/s, ids %t, 503 share %g, outage %s, policy %s, healthy endpoint %t; output in %s",
		cfg.Duration, cfg.Rate, cfg.IDs, cfg.Fail, cfg.Outage, cfg.Policy, cfg.Healthy, cfg.Out)
	r := &run{t: t, cfg: cfg, env: startEnv(t), ledger: testutil.NewLedger(), loadBefore: loadAverage()}
	r.setUp(managerBinary(t))
	r.post()
	r.drain()
	r.finish()
}

// setUp creates the namespace, the ingest token, the endpoints and their
// receivers, and starts the manager.
func (r *run) setUp(bin string) {
	t := r.t
	r.ns = r.env.Namespace(t)
	token := randomToken()
	createIngestToken(t, r.env, r.ns, token)
	r.crm = newEndpoint(t, "crm", r.ledger, r.cfg.Fail)
	createEndpoint(t, r.env, r.ns, "crm", r.crm.srv.URL+"/hooks/wa", r.cfg)
	names := []string{"crm"}
	if r.cfg.Healthy {
		r.healthy = newEndpoint(t, "healthy", r.ledger, 0)
		createEndpoint(t, r.env, r.ns, "healthy", r.healthy.srv.URL+"/hooks/wa", r.cfg)
		names = append(names, "healthy")
	}
	r.dataDir = t.TempDir()
	r.pprofAddr = testutil.FreeAddr(t)
	r.m = testutil.StartManager(t, testutil.ManagerOptions{
		Bin: bin,
		Args: []string{
			"--kubeconfig", r.env.Kubeconfig,
			"--data-dir", r.dataDir,
			"--egress-allow-cidrs", "127.0.0.0/8",
			"--status-flush-interval", "5s",
			"--pprof-bind-address", r.pprofAddr,
		},
		Metrics:  true,
		LogPath:  filepath.Join(r.cfg.Out, "manager.log"),
		ShowLogs: os.Getenv("SOAK_SHOW_LOGS") != "",
	})
	r.m.WaitReady(90 * time.Second)
	waitWHCReady(t, r.env, r.ns, names...)
	w, err := getWHC(r.env, r.ns, "crm")
	if err != nil {
		t.Fatal(err)
	}
	if w.Spec.Delivery != nil {
		r.policy = *w.Spec.Delivery
	}
	r.probe = &probe{
		pid:        r.m.Pid,
		metricsURL: "http://" + r.m.MetricsAddr + "/metrics",
		dataDir:    r.dataDir,
		client:     &http.Client{Timeout: 10 * time.Second},
	}
	r.prod = newProducer(r.cfg, r.m.IngestAddr, r.ns, token, r.ledger)
	t.Logf("manager pid %d up: ingest %s, metrics %s, pprof %s, data dir %s", r.m.Pid(), r.m.IngestAddr, r.m.MetricsAddr, r.pprofAddr, r.dataDir)
}

// post runs the load for cfg.Duration while a sampler looks at the
// manager every cfg.SampleEvery; the sampler goes on through the drain.
func (r *run) post() {
	t := r.t
	src := &eventSource{}
	// One event first, retried until the manager's cache has the token.
	if !r.prod.post(src.next(), true) {
		t.Fatalf("the first event was not accepted: %s", r.prod.codeSummary())
	}
	r.start = time.Now()
	if r.cfg.Outage > 0 {
		r.crm.outageUntil.Store(r.start.Add(r.cfg.Outage).UnixNano())
		// The heap at the outage's peak: just before the receiver recovers.
		lead := min(5*time.Second, r.cfg.Outage/10)
		timer := time.AfterFunc(r.cfg.Outage-lead, func() {
			path := filepath.Join(r.cfg.Out, "heap-outage-peak.pb.gz")
			if err := r.fetch("/debug/pprof/heap?gc=1", path); err != nil {
				t.Logf("heap profile at the outage's peak: %v", err)
				return
			}
			r.mu.Lock()
			r.peakProfile, r.peakProfileAt = path, clock(time.Since(r.start))
			r.mu.Unlock()
		})
		t.Cleanup(func() { timer.Stop() })
	}
	r.takeSample("start")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(r.cfg.SampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				r.takeSample("")
			}
		}
	})
	var once sync.Once
	r.stopSampling = func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
		})
	}
	t.Cleanup(r.stopSampling)
	r.prod.run(src, r.start, r.start.Add(r.cfg.Duration))
	r.mu.Lock()
	r.postingEnd = time.Now()
	r.mu.Unlock()
	t.Logf("posting stopped after %s: %d posted, %d accepted, %d answers not 202, %d not posted (posters behind)",
		r.postingEnd.Sub(r.start).Round(time.Millisecond), r.prod.posted.Load(), r.prod.accepted.Load(), r.prod.non202.Load(), r.prod.skipped.Load())
}

// drain waits, at most cfg.drainBound(), until every accepted event has
// been answered 2xx by every endpoint, or the manager gave up on the rest.
func (r *run) drain() {
	t := r.t
	bound := r.cfg.drainBound()
	t.Logf("waiting up to %s for %d accepted events to be delivered", bound, r.prod.accepted.Load())
	deadline := r.postingEnd.Add(bound)
	var lastStatus time.Time
	gaveUp := 0
	for {
		accepted := r.prod.accepted.Load()
		done := r.crm.delivered.Load() >= accepted && (r.healthy == nil || r.healthy.delivered.Load() >= accepted)
		if done {
			break
		}
		if !r.m.Running() {
			r.drainNote = "the manager exited"
			break
		}
		if time.Now().After(deadline) {
			r.drainNote = fmt.Sprintf("the drain bound (%s) was reached", bound)
			break
		}
		// Status counters are flushed every 5 s: when nothing is pending
		// and the rest failed for good twice in a row, nothing more will come.
		if time.Since(lastStatus) >= 6*time.Second {
			lastStatus = time.Now()
			if note := r.gaveUp(accepted); note != "" {
				if gaveUp++; gaveUp >= 2 {
					r.drainNote = note
					break
				}
			} else {
				gaveUp = 0
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	r.drainEnd = time.Now()
	if r.drainNote != "" {
		t.Logf("stopped waiting: %s", r.drainNote)
	}
}

// gaveUp returns a note when an endpoint's status says nothing is pending
// and events failed for good, so that the rest will never arrive.
func (r *run) gaveUp(accepted int64) string {
	eps := []*endpoint{r.crm}
	if r.healthy != nil {
		eps = append(eps, r.healthy)
	}
	for _, e := range eps {
		w, err := getWHC(r.env, r.ns, e.name)
		if err != nil {
			continue
		}
		st := w.Status
		if st.EventsPending == 0 && st.EventsFailed > 0 && e.delivered.Load()+st.EventsFailed >= accepted {
			return fmt.Sprintf("the manager gave up on %d events of %s (status: eventsFailed %d, eventsPending 0): the policy's maxAttempts or maxAgeSeconds ran out", st.EventsFailed, e.name, st.EventsFailed)
		}
	}
	return ""
}

// takeSample records one sample, rewrites samples.csv and logs a line.
func (r *run) takeSample(phase string) sample {
	now := time.Now()
	s := sample{
		At:               now.Sub(r.start),
		Phase:            phase,
		Posted:           r.prod.posted.Load(),
		Accepted:         r.prod.accepted.Load(),
		Non202:           r.prod.non202.Load(),
		Delivered:        r.crm.delivered.Load(),
		HealthyDelivered: -1,
	}
	s.Pending = s.Accepted - s.Delivered
	if r.healthy != nil {
		s.HealthyDelivered = r.healthy.delivered.Load()
	}
	if s.Phase == "" {
		s.Phase = "posting"
		r.mu.Lock()
		if !r.postingEnd.IsZero() {
			s.Phase = "draining"
		}
		r.mu.Unlock()
		if r.cfg.Outage > 0 && s.At < r.cfg.Outage {
			s.Phase += ", outage"
		}
	}
	r.probe.fill(&s)
	r.mu.Lock()
	r.samples = append(r.samples, s)
	samples := slices.Clone(r.samples)
	r.mu.Unlock()
	if err := writeCSV(filepath.Join(r.cfg.Out, "samples.csv"), samples); err != nil {
		r.t.Logf("samples.csv: %v", err)
	}
	healthy := ""
	if s.HealthyDelivered >= 0 {
		healthy = fmt.Sprintf(" healthy-delivered=%d", s.HealthyDelivered)
	}
	r.t.Logf("%s %-17s posted=%d accepted=%d delivered=%d pending=%d%s | RSS %.1f MiB heap %.1f MiB goroutines %d fds %d data %.1f MiB cpu %s%s",
		clock(s.At), s.Phase, s.Posted, s.Accepted, s.Delivered, s.Pending, healthy,
		mib(s.RSS), mib(s.HeapInuse), s.Goroutines, s.FDs, mib(s.DataDir), s.CPU.Round(100*time.Millisecond), errSuffix(s.Errs))
	return s
}

func errSuffix(errs []string) string {
	if len(errs) == 0 {
		return ""
	}
	return " (" + strings.Join(errs, "; ") + ")"
}

// fetch saves a URL path of the manager's pprof server into file.
func (r *run) fetch(path, file string) error {
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Get("http://" + r.pprofAddr + path)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

// finish takes the last sample and the profiles while the manager still
// runs, checks every accepted event, writes the report and fails the test
// on a lost or altered event.
func (r *run) finish() {
	t := r.t
	r.stopSampling()
	end := r.takeSample("end")
	var profiles []string
	for _, p := range []struct{ path, file string }{
		{"/debug/pprof/heap?gc=1", "heap.pb.gz"},
		{"/debug/pprof/goroutine?debug=1", "goroutine.txt"},
	} {
		if err := r.fetch(p.path, filepath.Join(r.cfg.Out, p.file)); err != nil {
			t.Errorf("fetching %s: %v", p.path, err)
			continue
		}
		profiles = append(profiles, p.file)
	}
	// The heap profile ran a garbage collection: what is left is live.
	afterGC := r.takeSample("end, after GC")
	res := r.results()
	res.end, res.afterGC = end, afterGC
	res.profiles = profiles
	r.mu.Lock()
	samples := slices.Clone(r.samples)
	r.mu.Unlock()
	res.verdict = r.verdict(samples, res)
	report := r.report(res)
	if err := os.WriteFile(filepath.Join(r.cfg.Out, "report.md"), report, 0o644); err != nil {
		t.Error(err)
	}
	r.mu.Lock()
	c := chart{
		Title:      "Manager memory and data directory during a soak run",
		Subtitle:   r.summaryLine(),
		Samples:    r.samples,
		Outage:     r.cfg.Outage,
		PostingEnd: r.postingEnd.Sub(r.start),
	}
	r.mu.Unlock()
	if err := os.WriteFile(filepath.Join(r.cfg.Out, "chart.svg"), c.svg(), 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("report: %s", filepath.Join(r.cfg.Out, "report.md"))
	t.Log(res.verdict)
	for _, e := range res.endpoints {
		if e.lost > 0 {
			t.Errorf("%s: %d of %d accepted events were never delivered, with fewer attempts than the policy's maxAttempts (first: %s)", e.name, e.lost, res.accepted, strings.Join(e.lostIDs, ", "))
		}
		if e.gaveUp > 0 {
			t.Logf("%s: %d accepted events failed for good by the policy: the receiver answered 503 to each of their %d attempts (first: %s)", e.name, e.gaveUp, r.policy.MaxAttempts, strings.Join(e.gaveUpIDs, ", "))
		}
		if e.contentErr != nil {
			t.Errorf("%s: content check: %v", e.name, e.contentErr)
		}
	}
	if len(res.ledgerErrs) > 0 {
		t.Errorf("%d 202 answers did not name the event posted (first: %s)", len(res.ledgerErrs), res.ledgerErrs[0])
	}
}

// summaryLine is the run's settings in one line, for the chart.
func (r *run) summaryLine() string {
	ids := "with producer ids"
	if !r.cfg.IDs {
		ids = "without ids"
	}
	s := fmt.Sprintf("%s of posting at %g events/s (%s), receiver 503 share %g, policy %s", r.cfg.Duration, r.cfg.Rate, ids, r.cfg.Fail, r.cfg.Policy)
	if r.cfg.Outage > 0 {
		s += fmt.Sprintf(", outage %s", r.cfg.Outage)
	}
	return s + "; " + r.start.UTC().Format("2006-01-02 15:04 UTC")
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
