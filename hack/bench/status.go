package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/ingest"
	"github.com/wablast/webhook-operator/internal/operator/operatortest"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/status"
	"github.com/wablast/webhook-operator/internal/testutil"
)

func measureStatus(ctx context.Context, sz sizes) *result {
	res := &result{}
	env, err := testutil.StartEnv()
	if err != nil {
		return res.fail(err)
	}
	defer env.Stop()

	const ns = "bench-status"
	secret, err := signing.GenerateSecret()
	if err != nil {
		return res.fail(err)
	}
	rcv, err := newReceiver(secret)
	if err != nil {
		return res.fail(err)
	}
	defer rcv.close()

	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest", Labels: map[string]string{ingest.LabelIngestToken: "true"}},
			StringData: map[string]string{ingest.IngestTokenKey: staticToken},
		},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "signing"}, StringData: map[string]string{"secret": secret}},
	}
	for i := range sz.StatusEndpoints {
		name := fmt.Sprintf("ep-%02d", i)
		objs = append(objs, &webhooksv1alpha1.WebhookConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: webhooksv1alpha1.WebhookConfigSpec{
				URL:       rcv.URL + "/" + name,
				SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: "signing"},
				Events:    []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
			},
		})
	}
	uids := map[string]string{} // status path -> UID
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			return res.fail(fmt.Errorf("creating %T %s: %w", o, o.GetName(), err))
		}
		if w, ok := o.(*webhooksv1alpha1.WebhookConfig); ok {
			path := fmt.Sprintf("/apis/%s/namespaces/%s/webhookconfigs/%s/status", webhooksv1alpha1.GroupVersion, ns, w.Name)
			uids[path] = string(w.UID)
		}
	}

	// The manager exactly as the integration tests run it (internal/operator
	// through operatortest), its client wrapped to count the dispatcher's
	// status writes.
	dataDir, err := os.MkdirTemp("", "wablast-bench-status-")
	if err != nil {
		return res.fail(err)
	}
	defer func() { _ = os.RemoveAll(dataDir) }() // best effort: a temporary directory
	ocfg := operatortest.Config(dataDir)
	ocfg.StatusFlushInterval = sz.StatusFlush
	inst, err := operatortest.Start(env.Config, ns, ocfg, 60*time.Second)
	if err != nil {
		return res.fail(err)
	}
	defer func() {
		if err := inst.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "   manager:", err)
		}
	}()
	op, writes := inst.Op, inst.Writes
	if !waitFor(ctx, 60*time.Second, 200*time.Millisecond, func() bool {
		var list webhooksv1alpha1.WebhookConfigList
		if env.Client.List(ctx, &list, client.InNamespace(ns)) != nil {
			return false
		}
		ready := 0
		for i := range list.Items {
			if meta.IsStatusConditionTrue(list.Items[i].Status.Conditions, "Ready") {
				ready++
			}
		}
		return ready == sz.StatusEndpoints
	}) {
		return res.fail(errors.New("the WebhookConfigs did not become Ready within 60s"))
	}

	c := newPostClient(16)
	defer c.CloseIdleConnections()
	url := "http://" + op.Ingest.Addr() + "/v1/namespaces/" + ns + "/events"
	hdr := ingestHeader()
	// Warm-up: one event to every endpoint (the static token is looked up
	// once, the connections open, the endpoint consumers exist).
	rcv.reset(sz.StatusEndpoints)
	warm := benchEvent(9_000_000)
	answer, err := postEvents(ctx, c, url, hdr, false, warm.JSON(false))
	if err != nil {
		return res.fail(fmt.Errorf("warm-up post: %w", err))
	}
	warmIDs, err := rcv.Ledger.Accepted([]testutil.Posted{warm}, answer)
	if err != nil {
		return res.fail(fmt.Errorf("warm-up post: %w", err))
	}
	if _, err := rcv.wait(ctx, 60*time.Second); err != nil {
		return res.fail(fmt.Errorf("warm-up: %w", err))
	}
	if err := rcv.check("status warm-up", warmIDs); err != nil {
		return res.fail(err)
	}
	time.Sleep(sz.StatusFlush + sz.StatusFlush/2) // let the warm-up's status land

	const batch = 100
	batchesPerSec := max(sz.StatusRate/batch, 1)
	n := int(float64(batchesPerSec) * sz.StatusFor.Seconds())
	posted := make([][]testutil.Posted, n)
	bodies := make([][]byte, n)
	for i := range bodies {
		posted[i] = benchEvents(i*batch, batch)
		bodies[i] = testutil.NDJSON(posted[i], false)
	}
	rcv.reset(-1)
	t0 := time.Now()
	posts := pace(ctx, c, url, hdr, "application/x-ndjson", n, batchesPerSec, 8, func(i int) []byte { return bodies[i] })
	t1 := t0.Add(sz.StatusFor)
	if d := time.Until(t1); d > 0 {
		time.Sleep(d)
	}
	delivered, _, bad := rcv.counts()
	for _, pp := range posts {
		if pp.err != nil {
			return res.fail(fmt.Errorf("a post failed: %w", pp.err))
		}
	}
	if bad > 0 {
		return res.fail(fmt.Errorf("%d deliveries failed signature verification", bad))
	}
	lastAck := posts[len(posts)-1].acked
	// What arrived so far (the window does not drain the queue) must be
	// what was posted: NDJSON batches without ids, each line's data its own.
	answers := make([][]byte, n)
	for i, pp := range posts {
		answers[i] = pp.answer
	}
	if _, err := recordAccepted(rcv.Ledger, posted, answers); err != nil {
		return res.fail(err)
	}
	if err := rcv.check("status", nil); err != nil {
		return res.fail(err)
	}

	// The status.Writer flushes on a ticker and writes the changed resources
	// of a flush one after another in UID order, so a write whose UID does
	// not sort after the previous write's starts a new flush. The rate is
	// the writes of the flushes that started in [t0, t1), the last one
	// excluded, over the time from the first of them to the last: measured
	// from flush start to flush start, it has no edge effect. A bug that
	// flushed more often than the interval, or wrote a resource twice, would
	// raise it above the bound.
	all := writes.All()
	type flush struct {
		start  time.Time
		writes int
	}
	var flushes []flush
	prevUID := ""
	for _, w := range all {
		u, ok := uids[w.Path]
		if !ok {
			continue
		}
		if len(flushes) == 0 || u <= prevUID {
			flushes = append(flushes, flush{start: w.At})
		}
		flushes[len(flushes)-1].writes++
		prevUID = u
	}
	var window []flush
	for _, f := range flushes {
		if !f.start.Before(t0) && f.start.Before(t1) {
			window = append(window, f)
		}
	}
	if len(window) < 2 {
		return res.fail(fmt.Errorf("only %d status flushes started in the %s window (%d writes in the whole run); cannot measure a rate", len(window), sz.StatusFor, len(all)))
	}
	counted := 0
	for _, f := range window[:len(window)-1] {
		counted += f.writes
	}
	span := window[len(window)-1].start.Sub(window[0].start)
	rate := perSec(counted, span)
	perResource := map[string][]time.Time{}
	for _, w := range all {
		perResource[w.Path] = append(perResource[w.Path], w.At)
	}
	minGap := time.Duration(math.MaxInt64)
	for _, ts := range perResource {
		for i := 1; i < len(ts); i++ {
			minGap = min(minGap, ts[i].Sub(ts[i-1]))
		}
	}
	bound := float64(sz.StatusEndpoints) / sz.StatusFlush.Seconds()
	// 2% for timer jitter: flush starts are taken at their first write.
	pass := rate <= bound*1.02
	res.info(fmt.Sprintf("offered: %d events/s to %d endpoints for %s (NDJSON batches of %d)", sz.StatusRate, sz.StatusEndpoints, sz.StatusFor, batch),
		fmtRate(perSec(n*batch, lastAck.Sub(posts[0].sent)), "events/s accepted"))
	res.info("deliveries verified by the receiver during the window", fmtRate(perSec(delivered, sz.StatusFor), "deliveries/s"))
	res.add(fmt.Sprintf("5. status writes/s, --status-flush-interval %s", sz.StatusFlush),
		fmt.Sprintf("%.2f writes/s", rate), fmt.Sprintf("<= %.2f/s (%d endpoints / %s, +2%% timer jitter)", bound, sz.StatusEndpoints, sz.StatusFlush), pass)
	gap := "n/a"
	if minGap != time.Duration(math.MaxInt64) {
		gap = minGap.Round(time.Millisecond).String()
	}
	res.notef("A real kube-apiserver and etcd (testutil.StartEnv), %d WebhookConfigs and a Secret in one namespace, and operator.Setup in a controller-runtime manager as test/integration runs it, with --status-flush-interval %s. The ingest token is a static token Secret labelled %s; the manager's KubeAuthenticator checks it (cached). The harness posts NDJSON batches of %d at %d batches/s from 8 paced posters, so the posters cost little next to the operator.",
		sz.StatusEndpoints, sz.StatusFlush, ingest.LabelIngestToken, batch, batchesPerSec)
	res.notef("Status writes are the dispatcher's server-side apply PATCHes of /status under field manager %s, counted in the manager's rest.Config transport. The status.Writer writes the changed resources of a flush one after another in UID order, which marks where each flush starts. %d flushes started in the %s window; the rate is the writes of all but the last (%d) over the %s from the first flush's start to the last's, so no flush is cut by the window's edges (2%% allowed for timer jitter). Over the whole run %d writes; the shortest gap between two writes of one resource was %s (a flush that ran long delays its writes, so single gaps can be shorter than the interval; the rate cannot exceed the bound). The receiver verified %d deliveries in the window; the rest of the offered load was still queued in JetStream when the window closed (it is not drained). Every body that had arrived when the window closed was compared with what was posted (type, data, timestamp; the events: %s).",
		status.DeliveryFieldManager, len(window), sz.StatusFor, counted, span.Round(time.Millisecond), len(all), gap, delivered, payloadText)
	if !pass {
		res.findingf("Status writes %.2f/s exceed the bound %.2f/s (%d writes in %d flushes over %s): the status.Writer should write each resource at most once per flush interval.", rate, bound, counted, len(window)-1, span.Round(time.Millisecond))
	}
	if offered := sz.StatusRate * sz.StatusEndpoints; perSec(delivered, sz.StatusFor) < 0.9*float64(offered) {
		res.findingf("The pipeline delivered %.0f of the %d deliveries/s offered in the status measurement (%d events/s x %d endpoints); the status write count does not depend on that, since every endpoint changed in every flush.",
			perSec(delivered, sz.StatusFor), offered, sz.StatusRate, sz.StatusEndpoints)
	}
	return res
}
