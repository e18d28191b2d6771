package deliverylog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestResendAndPluginThroughAggregation resends one failed delivery with
// kubectl webhook resend (the create on webhookdeliveries/resend through the
// API server): the receiver gets the same webhook-id and the same body again,
// and the new attempt joins the same WebhookDelivery; kubectl webhook
// deliveries lists it with its event id as posted.
func TestResendAndPluginThroughAggregation(t *testing.T) {
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	rc := newReceiver(t, http.StatusInternalServerError)
	createEndpoint(t, ns, "flaky", rc.URL+"/hooks", 1)
	posted := enqueue(t, op, ns, "Resend.Me")
	name := deliverylog.Name("flaky", "Resend.Me")
	waitAttempts(t, ns, name, 1)
	first, _ := rc.body("Resend.Me")
	rc.mu.Lock()
	delete(rc.bodies, "Resend.Me")
	rc.mu.Unlock()

	plugin := filepath.Join(t.TempDir(), "kubectl-webhook")
	if out, err := exec.Command("go", "build", "-o", plugin, filepath.Join(testutil.RepoRoot(), "cmd", "kubectl-webhook")).CombinedOutput(); err != nil {
		t.Fatalf("building the plugin: %v: %s", err, out)
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", append(append([]string{"webhook"}, args...), "-n", ns, "--kubeconfig", env.Kubeconfig)...)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(plugin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("deliveries", "flaky", "--state", "failed")
	if err != nil || !strings.Contains(out, "Resend.Me") || !strings.Contains(out, "message.failed") || !strings.Contains(out, "500") {
		t.Fatalf("kubectl webhook deliveries flaky --state failed: %v:\n%s", err, out)
	}
	out, err = run("deliveries", "flaky", "--state", "succeeded")
	if err != nil || strings.Contains(out, "Resend.Me") {
		t.Errorf("--state succeeded shows the failed delivery: %v:\n%s", err, out)
	}
	out, err = run("deliveries", "flaky", "--state", "bogus")
	if err == nil || !strings.Contains(out, "invalid --state") {
		t.Errorf("--state bogus: %v:\n%s", err, out)
	}

	out, err = run("resend", "flaky", "Resend.Me")
	if err != nil {
		t.Fatalf("kubectl webhook resend: %v:\n%s", err, out)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, ok := rc.body("Resend.Me"); !ok {
			return fmt.Errorf("the resent delivery has not arrived")
		}
		return nil
	})
	again, _ := rc.body("Resend.Me")
	if !bytes.Equal(again, first) {
		t.Errorf("resent body differs:\nfirst: %s\nagain: %s", first, again)
	}
	d := waitAttempts(t, ns, name, 2)
	checkEnvelope(t, d, posted["Resend.Me"], again)
	if d.Status.State != deliveryv1alpha1.StateFailed || d.Status.Attempts[1].StatusCode != http.StatusInternalServerError {
		t.Errorf("after the resend: %s, attempts %+v", d.Status.State, d.Status.Attempts)
	}

	out, err = run("resend", "flaky", "never-posted")
	if err == nil || !strings.Contains(out, "holds no delivery") {
		t.Errorf("resend of an unknown event: %v:\n%s", err, out)
	}
}

func waitAttempts(t *testing.T, ns, name string, n int) *deliveryv1alpha1.WebhookDelivery {
	t.Helper()
	var d deliveryv1alpha1.WebhookDelivery
	testutil.Eventually(t, 30*time.Second, func() error {
		out, err := kubectl(t, "get", "whd", "-n", ns, name, "-o", "json")
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		d = deliveryv1alpha1.WebhookDelivery{}
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			return err
		}
		if len(d.Status.Attempts) != n || d.Status.State == deliveryv1alpha1.StatePending {
			return fmt.Errorf("%s: %d attempts, state %s; want %d", name, len(d.Status.Attempts), d.Status.State, n)
		}
		return nil
	})
	return &d
}

func checkEnvelope(t *testing.T, d *deliveryv1alpha1.WebhookDelivery, p testutil.Posted, arrived []byte) {
	t.Helper()
	if d.Spec.Envelope != string(arrived) {
		t.Errorf("%s: envelope %s, arrived %s", d.Name, rawOf(d), arrived)
	}
	var e envelope
	if err := json.Unmarshal(arrived, &e); err != nil || e.Type != p.Type || !jsonEqual(e.Data, p.Data) {
		t.Errorf("%s: arrived %s, posted %s %s", d.Name, arrived, p.Type, p.Data)
	}
}
