//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestMonitoredMetricsAreExported runs bin/manager against a control plane,
// has it deliver events to a receiver that succeeds, one that fails (so
// retries happen and deliveries fail for good) and a URL the egress policy
// refuses, then scrapes its /metrics: every metric that a query of the
// chart's dashboard or an expression of its alerts uses must be exported,
// histograms as histograms, and every one of those expressions must parse
// (promtool check rules on the rendered PrometheusRule and on the
// dashboard's queries as recording rules; promtool, not the Prometheus
// module's parser, to keep all of Prometheus out of go.mod).
func TestMonitoredMetricsAreExported(t *testing.T) {
	promtool := testutil.Promtool(t)
	managerBin := filepath.Join(testutil.RepoRoot(), "bin", "manager")
	if b := os.Getenv("E2E_MANAGER_BIN"); b != "" {
		managerBin = b // a manager built elsewhere
	}
	if _, err := os.Stat(managerBin); err != nil {
		t.Fatalf("%s is missing: run 'make test-e2e', which builds bin/manager", managerBin)
	}
	rules := testutil.RenderedRules(t)
	dir := t.TempDir()
	for name, data := range map[string][]byte{"rules.yaml": rules, "dashboard.yaml": testutil.DashboardRulesFile(t)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		testutil.Run(t, dir, promtool, "check", "rules", name)
	}
	exprs := testutil.RuleExprs(t, rules)
	for _, q := range testutil.DashboardQueries(t) {
		exprs = append(exprs, q.Expr)
	}
	used := testutil.MetricNames(exprs...)
	if len(used) < 10 {
		t.Fatalf("only %d metrics used by the dashboard and the alerts: %v", len(used), used)
	}

	env, err := testutil.StartEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx := context.Background()

	var okCount, failCount atomic.Int64
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		okCount.Add(1)
	}))
	defer ok.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		failCount.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer failing.Close()

	ns := env.Namespace(t)
	const token = "monitoring-ingest-token-0123456789"
	objs := []client.Object{
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ingest-token", Labels: map[string]string{"webhooks.wablast.io/ingest-token": "true"}},
			StringData: map[string]string{"token": token},
		},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "signing"}, StringData: map[string]string{"secret": sampleSecret}},
	}
	for name, url := range map[string]string{
		"ok":      ok.URL + "/hooks",
		"failing": failing.URL + "/hooks",
		// Cloud metadata: refused by the egress policy even with loopback allowed.
		"refused": "http://169.254.169.254/hooks",
	} {
		objs = append(objs, &webhooksv1alpha1.WebhookConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: webhooksv1alpha1.WebhookConfigSpec{
				URL:       url,
				SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: "signing"},
				Events:    []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
				Delivery:  &webhooksv1alpha1.DeliveryPolicy{MaxAttempts: 2, InitialBackoffSeconds: 1, MaxBackoffSeconds: 1},
			},
		})
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	m := testutil.StartManager(t, testutil.ManagerOptions{
		Bin: managerBin,
		Args: []string{
			"--kubeconfig", env.Kubeconfig,
			"--data-dir", filepath.Join(t.TempDir(), "nats"),
			"--egress-allow-cidrs", "127.0.0.0/8",
			"--status-flush-interval", "1s",
		},
		Metrics: true,
	})
	m.WaitReady(90 * time.Second)
	for _, name := range []string{"ok", "failing", "refused"} {
		testutil.EventuallyEvery(t, 60*time.Second, 100*time.Millisecond, func() error {
			var whc webhooksv1alpha1.WebhookConfig
			if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &whc); err != nil {
				return err
			}
			if !meta.IsStatusConditionTrue(whc.Status.Conditions, "Ready") {
				return fmt.Errorf("%s not Ready", name)
			}
			return nil
		})
	}

	// Events with and without an id (the fan-out and the direct path), and
	// one post with a bad token.
	const events = 5
	for i := range events {
		id := ""
		if i%2 == 0 {
			id = fmt.Sprintf(`"id":"evt-%d",`, i)
		}
		body := fmt.Sprintf(`{%s"type":"message.sent","data":{"messageId":"m-%d","sessionId":"s-1","to":"+6281234567890"}}`, id, i)
		if code := postEvent(t, m.IngestAddr, ns, token, body); code != http.StatusAccepted {
			t.Fatalf("post %d: %d", i, code)
		}
	}
	if code := postEvent(t, m.IngestAddr, ns, "not-a-token-of-anyone-0123456789", `{"type":"message.sent","data":{}}`); code != http.StatusUnauthorized {
		t.Fatalf("a post with an unknown token: %d, want 401", code)
	}

	// Wait until every kind of outcome happened and was counted.
	testutil.EventuallyEvery(t, 90*time.Second, 250*time.Millisecond, func() error {
		for name, want := range map[string]float64{
			"wablast_webhook_end_to_end_latency_seconds_count": events,
			"wablast_webhook_events_failed_total":              2 * events, // failing and refused
			"wablast_webhook_delivery_retries_total":           2 * events,
			"wablast_webhook_egress_refused_total":             2 * events,
			"wablast_webhook_status_writes_total":              1,
		} {
			v, err := m.MetricSum(name)
			if err != nil {
				return err
			}
			if v < want {
				return fmt.Errorf("%s = %v, want at least %v", name, v, want)
			}
		}
		return nil
	})
	if okCount.Load() < events || failCount.Load() < 2*events {
		t.Fatalf("the receivers saw %d and %d requests, want %d and %d", okCount.Load(), failCount.Load(), events, 2*events)
	}

	// Gauges are set every 5 s: wait (that long at most) for the backlog
	// series of every registered WebhookConfig and for every metric used.
	var exposition []byte
	testutil.EventuallyEvery(t, 30*time.Second, 250*time.Millisecond, func() error {
		exposition = scrape(t, m.MetricsAddr)
		for _, name := range []string{"ok", "failing", "refused"} {
			for _, metric := range []string{"wablast_webhook_pending_deliveries", "wablast_webhook_delivery_lag_seconds"} {
				series := fmt.Sprintf(`%s{name=%q,namespace=%q}`, metric, name, ns)
				if !bytes.Contains(exposition, []byte(series)) {
					return fmt.Errorf("no series %s", series)
				}
			}
		}
		families := testutil.ExposedFamilies(exposition)
		var missing []string
		for _, name := range used {
			if _, ok := families[name]; !ok {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("used by the dashboard or the alerts but not exported: %v", missing)
		}
		return nil
	})
	families := testutil.ExposedFamilies(exposition)
	for _, name := range used {
		if strings.HasSuffix(name, "_seconds") && name != "wablast_webhook_delivery_lag_seconds" && families[name] != "histogram" {
			t.Errorf("%s is a %s; the dashboard takes quantiles of it as a histogram", name, families[name])
		}
	}
	t.Logf("checked %d metrics used by the dashboard and the alerts: %s", len(used), strings.Join(used, ", "))
}

// postEvent posts one JSON event and returns the status code.
func postEvent(t *testing.T, addr, ns, token, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/namespaces/"+ns+"/events", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// scrape returns the manager's /metrics.
func scrape(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	return b
}
