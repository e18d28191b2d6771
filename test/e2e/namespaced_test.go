//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestEndToEndNamespaceScoped installs the chart with watchNamespaces and
// runs bin/manager with the --watch-namespaces the chart gives its Pod, as
// the chart's ServiceAccount: with only the Roles of the watched namespace
// and system:auth-delegator, the manager becomes ready and reconciles there,
// leaves the other namespace's WebhookConfig alone, and refuses events for it.
func TestEndToEndNamespaceScoped(t *testing.T) {
	const (
		rel, relNS    = "scoped", "scoped-system"
		watched, away = "shop", "elsewhere"
		ingest        = "127.0.0.1:18092"
		probes        = "127.0.0.1:18091"
		token         = "scoped-ingest-token-0123456789abcdef"
	)
	root := testutil.RepoRoot()
	bin := filepath.Join(root, "bin")
	if _, err := os.Stat(filepath.Join(bin, "manager")); err != nil {
		t.Fatal("bin/manager is missing: run 'make test-e2e', which builds it")
	}
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal("HELM must point at the helm binary: run 'make test-e2e'")
	}
	env, err := testutil.StartEnvWith(testutil.EnvOptions{InstallCRDs: false})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	r := &runner{t: t, root: root, bin: bin, kubeconfig: env.Kubeconfig, helm: helm}

	// The watched namespaces must exist before the install: the Roles live there.
	r.kubectl("create", "namespace", watched)
	r.kubectl("create", "namespace", away)
	r.must(helm, "install", rel, "charts/webhook-operator", "--namespace", relNS, "--create-namespace",
		"--set", "watchNamespaces={"+watched+"}",
		"--set", "rbac.eventProducer.create=false", "--set", "rbac.aggregateToDefaultRoles=false",
		// No Service can reach a manager run out of the cluster (see e2e_test.go).
		"--set", "deliveryAPI.enabled=false")
	if out := strings.TrimSpace(r.kubectl("get", "clusterroles", "-l", "app.kubernetes.io/instance="+rel, "-o", "name")); out != "" {
		t.Errorf("a namespace-scoped install created ClusterRoles:\n%s", out)
	}
	if out := r.kubectl("get", "clusterrolebindings", "-l", "app.kubernetes.io/instance="+rel, "-o", "jsonpath={.items[*].roleRef.name}"); strings.TrimSpace(out) != "system:auth-delegator" {
		t.Errorf("cluster-wide, the install binds %q, want only system:auth-delegator", out)
	}
	r.kubectl("get", "role", "-n", watched, rel+"-webhook-operator-manager")
	args := r.kubectl("get", "statefulset", "-n", relNS, "-l", "app.kubernetes.io/instance="+rel, "-o", "jsonpath={.items[0].spec.template.spec.containers[0].args}")
	flag := "--watch-namespaces=" + watched
	if !strings.Contains(args, flag) {
		t.Fatalf("the chart's manager args %s lack %s", args, flag)
	}

	sa := rel + "-webhook-operator"
	mgr, _ := r.startProcess("manager.log", filepath.Join(bin, "manager"),
		"--kubeconfig", impersonatingKubeconfig(t, env.Kubeconfig, "system:serviceaccount:"+relNS+":"+sa),
		"--data-dir", filepath.Join(t.TempDir(), "nats"),
		"--leader-elect", "--leader-election-namespace", relNS,
		"--ingest-bind-address", ingest,
		"--delivery-api-bind-address", "127.0.0.1:0",
		"--health-probe-bind-address", probes,
		"--metrics-bind-address", "0",
		flag)
	r.eventually(90*time.Second, func() error {
		if mgr.ProcessState != nil {
			return fmt.Errorf("manager exited")
		}
		resp, err := http.Get("http://" + probes + "/readyz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})

	manifest := filepath.Join(t.TempDir(), "whc.yaml")
	if err := os.WriteFile(manifest, []byte(`apiVersion: v1
kind: Secret
metadata:
  name: ingest
  labels:
    webhooks.wablast.io/ingest-token: "true"
stringData:
  token: `+token+`
---
apiVersion: webhooks.wablast.io/v1alpha1
kind: WebhookConfig
metadata:
  name: crm
spec:
  url: https://crm.example.com/hooks
  events: ["*"]
  enabled: false
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The namespace not watched first: had the manager seen it, it would
	// have reconciled it no later than the watched one.
	r.kubectl("apply", "-n", away, "-f", manifest)
	r.kubectl("apply", "-n", watched, "-f", manifest)
	r.kubectl("wait", "-n", watched, "--for=condition=Ready", "whc/crm", "--timeout=60s")
	if out := r.kubectl("get", "whc", "crm", "-n", away, "-o", "jsonpath={.status.conditions}"); strings.TrimSpace(out) != "" {
		t.Errorf("the WebhookConfig in %s (not watched) has conditions %s", away, out)
	}
	if out := r.kubectl("get", "secret", "crm-signing", "-n", watched, "-o", "name"); strings.TrimSpace(out) != "secret/crm-signing" {
		t.Errorf("no generated Secret in %s: %q", watched, out)
	}

	post := func(ns string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+ingest+"/v1/namespaces/"+ns+"/events",
			bytes.NewReader(testutil.VariedEvent("scoped-"+ns, 0, "message.sent").JSON(true)))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(watched); code != http.StatusAccepted {
		t.Errorf("POST to %s (watched): %d, want 202", watched, code)
	}
	if code := post(away); code != http.StatusForbidden {
		t.Errorf("POST to %s (not watched): %d, want 403", away, code)
	}
	r.must(helm, "uninstall", rel, "--namespace", relNS, "--wait")
}
