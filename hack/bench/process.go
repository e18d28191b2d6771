package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/ingest"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// profileSeconds is how long the manager process is profiled with
// -cpuprofile (a pass of 20,000 events with ids takes longer).
const profileSeconds = 4

// fetchProfile takes a CPU profile of seconds from the pprof handlers at addr
// and writes it to path.
func fetchProfile(ctx context.Context, addr, path string, seconds int) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end below
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /debug/pprof/profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return "", err
	}
	return path, f.Close()
}

// processPosters is how many producers post at once in the process
// measurement: a Laravel app's queue workers, say.
const processPosters = 16

// measureProcess runs what users run: the manager binary as its own
// process (embedded store, static ingest token, a WebhookConfig created
// through the API server), posted to over loopback by 16 producers sending
// single events with ids, delivering to a receiver that verifies every
// signature with the official library; beside it, in the same rounds, the
// same receiver posted to directly (one HTTP hop), and a second manager
// binary with the delivery log turned off (what keeping the log costs).
func measureProcess(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, err := newBenchSecret()
	if err != nil {
		return res.fail(err)
	}
	tmp, err := os.MkdirTemp("", "wablast-bench-process-")
	if err != nil {
		return res.fail(err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best effort: a temporary directory
	bin, how, err := managerBinary(ctx, tmp)
	if err != nil {
		return res.fail(err)
	}
	env, err := testutil.StartEnv()
	if err != nil {
		return res.fail(err)
	}
	defer env.Stop()
	rcv, err := newReceiver(keys.secret)
	if err != nil {
		return res.fail(err)
	}
	defer rcv.close()

	// Two managers side by side, each serving a namespace of its own: one
	// with the delivery log at its defaults, one with it turned off
	// (--delivery-log-retention 0). They deliver to the same receiver, and
	// are posted to one at a time.
	const name = "crm"
	inFlight := int32(maxInFlight)
	type side struct {
		ns    string
		mgr   *managerProc
		url   string
		pprof string // its pprof address with -cpuprofile
	}
	start := func(ns string, extra ...string) (*side, *result) {
		for _, o := range []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest", Labels: map[string]string{ingest.LabelIngestToken: "true"}},
				StringData: map[string]string{ingest.IngestTokenKey: staticToken}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm-secret"}, StringData: map[string]string{"secret": keys.secret}},
			&webhooksv1alpha1.WebhookConfig{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: webhooksv1alpha1.WebhookConfigSpec{
				URL:       rcv.URL + "/hook",
				SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: "crm-secret"},
				Events:    []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
				Delivery:  &webhooksv1alpha1.DeliveryPolicy{MaxInFlight: inFlight},
			}},
		} {
			if err := env.Client.Create(ctx, o); err != nil {
				return nil, res.fail(err)
			}
		}
		dir, err := os.MkdirTemp(tmp, ns+"-")
		if err != nil {
			return nil, res.fail(err)
		}
		mgr, err := startManagerProc(bin, dir, env.Kubeconfig, append([]string{"--egress-allow-cidrs", "127.0.0.0/8", "--watch-namespaces", ns}, extra...)...)
		if err != nil {
			return nil, res.fail(err)
		}
		ready := func() bool {
			if mgr.Exited() {
				return false
			}
			var w webhooksv1alpha1.WebhookConfig
			if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &w); err != nil || !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") {
				return false
			}
			resp, err := http.Get("http://" + mgr.IngestAddr + "/readyz")
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}
		if !waitFor(ctx, 90*time.Second, 200*time.Millisecond, ready) {
			mgr.Stop()
			return nil, mgr.NotReady(res, 90*time.Second)
		}
		return &side{ns: ns, mgr: mgr, url: fmt.Sprintf("http://%s/v1/namespaces/%s/events", mgr.IngestAddr, ns)}, nil
	}
	// With -cpuprofile both managers serve pprof on loopback, and round
	// 1's passes with ids are profiled (profileSeconds of each).
	var onExtra, offExtra []string
	pprofAddr, offPprofAddr := "", ""
	if cpuProfilePrefix != "" {
		for _, a := range []*string{&pprofAddr, &offPprofAddr} {
			port, err := testutil.FreeLoopbackPort()
			if err != nil {
				return res.fail(err)
			}
			*a = fmt.Sprintf("127.0.0.1:%d", port)
		}
		onExtra = append(onExtra, "--pprof-bind-address", pprofAddr)
		offExtra = append(offExtra, "--pprof-bind-address", offPprofAddr)
	}
	on, failed := start("bench", onExtra...)
	if failed != nil {
		return failed
	}
	defer on.mgr.Stop()
	on.pprof = pprofAddr
	off, failed := start("bench-nolog", append([]string{"--delivery-log-retention", "0"}, offExtra...)...)
	if failed != nil {
		return failed
	}
	defer off.mgr.Stop()
	off.pprof = offPprofAddr

	psz := sz
	psz.C = processPosters
	c := newPostClient(processPosters)
	defer c.CloseIdleConnections()
	hdr := ingestHeader()
	next := 0 // event numbers never repeat across rounds: every post is a new id
	// load is what a pass's producers post: single events with an id (the
	// path producers that retry use), single events without one, or NDJSON
	// batches of sz.Batch events without ids.
	type load struct {
		ids   bool
		batch int
	}
	withIDs, withoutIDs, batches := load{ids: true, batch: 1}, load{batch: 1}, load{batch: sz.Batch}
	// send posts request i of a pass whose events start at number first,
	// and records what was accepted in the receiver's Ledger and accepted.
	send := func(sd *side, l load, first int, mu *sync.Mutex, accepted *[]string) func(i int) error {
		return func(i int) error {
			var posted []testutil.Posted
			var body []byte
			switch {
			case l.batch > 1:
				posted = benchEvents(first+i*l.batch, l.batch)
				body = testutil.NDJSON(posted, false)
			case l.ids:
				posted = []testutil.Posted{withProducerID(benchEvent(first+i), first+i)}
				body = posted[0].JSON(true)
			default:
				posted = []testutil.Posted{benchEvent(first + i)}
				body = posted[0].JSON(false)
			}
			answer, err := postEvents(ctx, c, sd.url, hdr, l.batch > 1, body)
			if err != nil {
				return err
			}
			got, err := rcv.Ledger.Accepted(posted, answer)
			if err != nil {
				return err
			}
			mu.Lock()
			*accepted = append(*accepted, got...)
			mu.Unlock()
			return nil
		}
	}
	for _, sd := range []*side{on, off} {
		var mu sync.Mutex
		var warm []string
		if err := warmUp(ctx, rcv, processPosters, send(sd, withIDs, next, &mu, &warm)); err != nil {
			return sd.mgr.Failed(res, err)
		}
		next += processPosters
	}

	type round struct {
		base, proc, noLog throughputRun
		procCPU           time.Duration // the manager process's CPU over the pass (log on)
		noLogCPU          time.Duration // the log-off manager's
		// single and batched are the log-on manager's passes without ids.
		single, batched       throughputRun
		singleCPU, batchedCPU time.Duration
	}
	// pass posts N events to sd's manager and checks what arrived.
	profileFile, profileErr := "", error(nil)
	pass := func(r int, sd *side, l load, what string) (throughputRun, time.Duration, *result) {
		posts := sz.N / l.batch
		n := posts * l.batch
		first := next
		next += n
		var mu sync.Mutex
		var accepted []string
		rcv.reset(n)
		var profiled chan struct{}
		if sd.pprof != "" && r == 0 && l == withIDs {
			profiled = make(chan struct{})
			go func() {
				defer close(profiled)
				if sd == on {
					profileFile, profileErr = fetchProfile(ctx, sd.pprof, cpuProfilePrefix+".process-manager.pprof", profileSeconds)
				} else {
					// The log-off manager's, to compare with (not summarised).
					_, _ = fetchProfile(ctx, sd.pprof, cpuProfilePrefix+".process-manager-nolog.pprof", profileSeconds)
				}
			}()
		}
		cpu0 := pidCPU(sd.mgr.Pid)
		run, err := timedPass(ctx, rcv, processPosters, posts, n, "", send(sd, l, first, &mu, &accepted))
		if profiled != nil {
			<-profiled
		}
		if err != nil {
			return run, 0, sd.mgr.Failed(res, fmt.Errorf("round %d, %s: %w", r+1, what, err))
		}
		cpu := pidCPU(sd.mgr.Pid) - cpu0
		if err := rcv.check(fmt.Sprintf("%s, round %d", what, r+1), accepted); err != nil {
			return run, 0, res.fail(err)
		}
		return run, cpu, nil
	}
	var rounds []round
	for r := range max(sz.Rounds, 1) {
		var rd round
		var err error
		if rd.base, err = baselineThroughput(ctx, psz, keys); err != nil {
			return res.fail(fmt.Errorf("round %d, baseline: %w", r+1, err))
		}
		// Log on and off alternate which goes first, so that a machine
		// getting busier or quieter over a round favours neither.
		var failed *result
		if r%2 == 0 {
			if rd.proc, rd.procCPU, failed = pass(r, on, withIDs, "manager process"); failed == nil {
				rd.noLog, rd.noLogCPU, failed = pass(r, off, withIDs, "manager process, delivery log off")
			}
		} else {
			if rd.noLog, rd.noLogCPU, failed = pass(r, off, withIDs, "manager process, delivery log off"); failed == nil {
				rd.proc, rd.procCPU, failed = pass(r, on, withIDs, "manager process")
			}
		}
		if failed == nil {
			rd.single, rd.singleCPU, failed = pass(r, on, withoutIDs, "manager process, single events without ids")
		}
		if failed == nil {
			rd.batched, rd.batchedCPU, failed = pass(r, on, batches, "manager process, NDJSON batches")
		}
		if failed != nil {
			return failed
		}
		rounds = append(rounds, rd)
	}
	ratio := func(rd round) float64 { return rd.proc.rate() / rd.base.rate() }
	var spread []string
	for i, rd := range rounds {
		spread = append(spread, fmt.Sprintf("round %d: %.2f (%.0f against %.0f events/s)", i+1, ratio(rd), rd.proc.rate(), rd.base.rate()))
	}
	sorted := slices.Clone(rounds)
	slices.SortFunc(sorted, func(a, b round) int { return cmp.Compare(ratio(a), ratio(b)) })
	m := sorted[len(sorted)/2]
	perEvent := func(d time.Duration, n int) float64 {
		return float64(d) / float64(time.Microsecond) / float64(max(n, 1))
	}

	res.info(fmt.Sprintf("baseline: plain http.Client to the receiver, C=%d, N=%d", processPosters, sz.N), fmtRate(m.base.rate(), "events/s"))
	res.info(fmt.Sprintf("manager binary as a process, single JSON events with ids, C=%d", processPosters), fmtRate(m.proc.rate(), "events/s"))
	res.info("9. ratio manager process (single events with ids) / baseline", fmt.Sprintf("%.2f", ratio(m)))
	res.info("9. manager process CPU per event, single events with ids", fmt.Sprintf("%.0f µs", perEvent(m.procCPU, m.proc.events)))
	// The manager's own CPU per event by what the producers post, each
	// the median of its rounds, and the cost of ids: with ids / without,
	// the median of the rounds' ratios (each round's passes ran minutes
	// apart at most, on the same manager).
	medianCPU := func(f func(rd round) float64) float64 {
		v := make([]float64, len(rounds))
		for i, rd := range rounds {
			v[i] = f(rd)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	cpuIDs := func(rd round) float64 { return perEvent(rd.procCPU, rd.proc.events) }
	cpuSingle := func(rd round) float64 { return perEvent(rd.singleCPU, rd.single.events) }
	cpuBatches := func(rd round) float64 { return perEvent(rd.batchedCPU, rd.batched.events) }
	res.info("9. manager process CPU per event, single events without ids", fmt.Sprintf("%.0f µs", medianCPU(cpuSingle)))
	res.info(fmt.Sprintf("9. manager process CPU per event, NDJSON batches of %d", sz.Batch), fmt.Sprintf("%.0f µs", medianCPU(cpuBatches)))
	idCost := medianCPU(func(rd round) float64 { return cpuIDs(rd) / cpuSingle(rd) })
	res.add("9. manager process CPU per event, with ids / without", fmt.Sprintf("%.2f", idCost), "<= 1.25", idCost <= 1.25)
	logRatio := func(rd round) float64 { return rd.proc.rate() / rd.noLog.rate() }
	byLog := slices.Clone(rounds)
	slices.SortFunc(byLog, func(a, b round) int { return cmp.Compare(logRatio(a), logRatio(b)) })
	ml := byLog[len(byLog)/2]
	res.info(fmt.Sprintf("manager process with the delivery log off (--delivery-log-retention 0), C=%d", processPosters), fmtRate(ml.noLog.rate(), "events/s"))
	res.info("manager process with the delivery log on (the same round)", fmtRate(ml.proc.rate(), "events/s"))
	res.add("9. throughput with the delivery log on / off", fmt.Sprintf("%.2f", logRatio(ml)), ">= 0.90 (under 10% apart)", logRatio(ml) >= 0.9)
	cpuNoLog := func(rd round) float64 { return perEvent(rd.noLogCPU, rd.noLog.events) }
	res.info("9. manager process CPU per event, single events with ids, delivery log on / off", fmt.Sprintf("%.0f / %.0f µs", medianCPU(cpuIDs), medianCPU(cpuNoLog)))
	res.charts = append(res.charts, chart{
		file: "process.svg", title: fmt.Sprintf("The manager binary, %d producers, single events with ids (median round)", processPosters), unit: "events/s",
		alt:  "Bar chart: events per second of one-hop HTTP and of the manager binary as a process",
		bars: []bar{{"one hop (baseline)", m.base.rate()}, {"manager process", m.proc.rate()}},
	})
	res.notef("The manager: %s, run with --data-dir (embedded NATS, --store-sync at its default), --egress-allow-cidrs 127.0.0.0/8 and the kubeconfig of a local kube-apiserver and etcd; a static ingest token Secret and one WebhookConfig (every type, maxInFlight %d) created through the API server. It authenticates every post through its KubeAuthenticator (the decision cached), checks each event's id in its on-disk idempotency index, stores its delivery and records the id, delivers it, and writes status to the API server, as in a cluster.", how, inFlight)
	res.notef("%d producers post single events, each with a new id, over loopback keep-alive connections; the receiver verifies every signature with the official Standard Webhooks library, and after each pass every delivered body is compared with what was posted (a difference fails the run). The baseline posts the same events' envelopes, signed, to the same kind of receiver from the same number of posters: one HTTP hop. Each pass is timed from the first post to the last unique receipt.", processPosters)
	res.notef("%d rounds side by side; the median round's ratio is reported. Every round: %s. The manager process's CPU per event in each round: %s.", len(rounds), strings.Join(spread, "; "), cpuSpread(rounds, func(rd round) string {
		return fmt.Sprintf("%.0f µs", perEvent(rd.procCPU, rd.proc.events))
	}))
	res.notef("The delivery log's cost: a second manager binary, in a namespace of its own (each manager runs with --watch-namespaces), started the same way but with --delivery-log-retention 0, is posted to in the same rounds, log on and log off alternating which goes first; both deliver to the same receiver, checked the same way. The median round's ratio of the two rates is reported (the goal: under 10%% apart). Every round, on / off: %s.", cpuSpread(rounds, func(rd round) string {
		return fmt.Sprintf("%.2f (%.0f against %.0f events/s; the manager's CPU an event %.0f against %.0f µs)", logRatio(rd), rd.proc.rate(), rd.noLog.rate(), cpuIDs(rd), cpuNoLog(rd))
	}))
	res.notef("What the manager's CPU per event costs by producer (its own process accounting, /proc/<pid>/stat, so the posters and the receiver are not in it), in the same rounds on the log-on manager: single events with ids, single events without ids, NDJSON batches of %d without ids. Every round: %s. The goal for ids: at most 1.25 times the CPU of events without.", sz.Batch, cpuSpread(rounds, func(rd round) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f µs (ids / without: %.2f)", cpuIDs(rd), cpuSingle(rd), cpuBatches(rd), cpuIDs(rd)/cpuSingle(rd))
	}))
	switch {
	case profileErr != nil:
		res.notef("The manager's CPU profile could not be taken: %v.", profileErr)
	case profileFile != "":
		if total, costs, err := breakdown(profileFile, processKinds); err != nil || total == 0 {
			res.notef("The manager's CPU profile (%s) could not be read: %v.", profileFile, err)
		} else {
			// Shares from the profile, scaled to the CPU per event the
			// process accounting measured over the whole pass.
			perEv := cpuIDs(rounds[0])
			var parts []string
			for i, d := range costs {
				if us := perEv * float64(d) / float64(total); us >= 1 {
					name := "other"
					if i < len(processKinds) {
						name = processKinds[i].name
					}
					parts = append(parts, fmt.Sprintf("%s %.0f µs", name, us))
				}
			}
			res.notef("Where the manager's CPU goes with ids: a %d s CPU profile of the manager process during round 1's pass with ids (`go tool pprof -top %s`), each part's share scaled to that pass's %.0f µs an event: %s.", profileSeconds, profileFile, perEv, strings.Join(parts, "; "))
		}
	}
	res.notef("This is the figure a user gets; the in-process passes of 1-2 leave out the process boundary, the KubeAuthenticator, the status writes to a real API server and the manager's other work, and so overstate it.")
	return res
}

func cpuSpread[T any](rounds []T, f func(T) string) string {
	parts := make([]string, len(rounds))
	for i, r := range rounds {
		parts[i] = f(r)
	}
	return strings.Join(parts, ", ")
}
