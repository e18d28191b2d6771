package deliverylog

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// pluginRunner builds kubectl-webhook and returns a function that runs
// `kubectl webhook ARGS -n ns` with it on PATH.
func pluginRunner(t *testing.T, ns string) func(args ...string) (string, error) {
	t.Helper()
	plugin := filepath.Join(t.TempDir(), "kubectl-webhook")
	if out, err := exec.Command("go", "build", "-o", plugin, filepath.Join(testutil.RepoRoot(), "cmd", "kubectl-webhook")).CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v: %s", err, out)
	}
	return func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", append(append([]string{"webhook"}, args...), "-n", ns, "--kubeconfig", env.Kubeconfig)...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(plugin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}

// TestStatusShowsTheLastHourFromTheDeliveryLog runs `kubectl webhook status`
// against the aggregated delivery API: the last hour of one endpoint that
// answers 200 and of one that answers 500 (one attempt each) shows the
// attempts each receiver answered.
func TestStatusShowsTheLastHourFromTheDeliveryLog(t *testing.T) {
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	up, down := newReceiver(t, http.StatusOK), newReceiver(t, http.StatusInternalServerError)
	createEndpoint(t, ns, "up", up.URL+"/hooks", 1)
	createEndpoint(t, ns, "down", down.URL+"/hooks", 1)
	ids := []string{"Last.Hour.1", "Last.Hour.2", "Last.Hour.3"}
	posted := enqueue(t, op, ns, ids...)
	for _, id := range ids {
		for _, e := range []struct {
			name string
			rc   *receiver
		}{{"up", up}, {"down", down}} {
			d := waitAttempts(t, ns, deliverylog.Name(e.name, id), 1)
			body, ok := e.rc.body(id)
			if !ok {
				t.Fatalf("%s: %s did not arrive", e.name, id)
			}
			checkEnvelope(t, d, posted[id], body)
		}
	}

	run := pluginRunner(t, ns)
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"up", []string{`^  Delivered:\s+\S+\s+3 attempts$`, `^  Failed:\s+·{12}\s+0 attempts$`,
			`^  Latency:\s+p50 \S+, p99 \S+ \(3\) \(accepted to delivered\)$`, `^  Attempt duration:\s+p50 \S+, p99 \S+ \(3\)$`,
			`^  Delivery lag:\s+0 \(nothing waiting\)$`}},
		{"down", []string{`^  Delivered:\s+·{12}\s+0 attempts$`, `^  Failed:\s+\S+\s+3 attempts$`,
			`^  Latency:\s+- \(accepted to delivered\)$`, `^  Delivery lag:\s+0 \(nothing waiting\)$`}},
	} {
		out, err := run("status", tc.name)
		if err != nil {
			t.Fatalf("kubectl webhook status %s: %v:\n%s", tc.name, err, out)
		}
		for _, re := range tc.want {
			if !regexp.MustCompile(`(?m)` + re).MatchString(out) {
				t.Errorf("kubectl webhook status %s: no line matches %q in:\n%s", tc.name, re, out)
			}
		}
	}
}
