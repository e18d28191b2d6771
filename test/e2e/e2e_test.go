//go:build e2e

// Package e2e drives the built binaries the way a user does: a local control
// plane, `helm install` of the chart, bin/manager run out of the cluster as
// the chart's ServiceAccount (so the chart's RBAC is what is tested),
// `kubectl apply` of the samples, events posted to the ingestion API, the demo
// receiver verifying every signature, `kubectl get`, `kubectl wait`,
// `kubectl webhook test`, and `helm uninstall`. Run it with `make test-e2e`.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/wablast/webhook-operator/internal/testutil"
)

const (
	release      = "wablast"
	releaseNS    = "webhook-operator-system"
	appNS        = "e2e"
	ingestAddr   = "127.0.0.1:18082"
	probesAddr   = "127.0.0.1:18081"
	receiverAddr = "127.0.0.1:9000" // config/samples points here
	sampleSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	sampleToken  = "dev-ingest-token-0123456789abcdef"
)

type runner struct {
	t          *testing.T
	root, bin  string
	kubeconfig string
	helm       string
}

func (r *runner) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.kubeconfig, "PATH="+r.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *runner) must(name string, args ...string) string {
	r.t.Helper()
	out, err := r.run(name, args...)
	if err != nil {
		r.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (r *runner) kubectl(args ...string) string { r.t.Helper(); return r.must("kubectl", args...) }

func (r *runner) eventually(timeout time.Duration, check func() error) {
	r.t.Helper()
	testutil.Eventually(r.t, timeout, check)
}

// startProcess runs a binary in its own process group, logging to a file that
// is printed if the test fails.
func (r *runner) startProcess(logName, path string, args ...string) *exec.Cmd {
	r.t.Helper()
	logFile := filepath.Join(r.t.TempDir(), logName)
	f, err := os.Create(logFile)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if r.t.Failed() {
			data, _ := os.ReadFile(logFile)
			r.t.Logf("==== %s ====\n%s", logName, tail(string(data), 60))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// impersonatingKubeconfig writes a copy of the admin kubeconfig that acts as user.
func impersonatingKubeconfig(t *testing.T, admin, user string) string {
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Impersonate = user
	}
	path := filepath.Join(t.TempDir(), "manager.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEndToEnd(t *testing.T) {
	root := testutil.RepoRoot()
	bin := filepath.Join(root, "bin")
	for _, b := range []string{"manager", "kubectl-webhook", "webhook-receiver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("bin/%s is missing: run 'make test-e2e', which builds it", b)
		}
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

	// 1. helm install: every object is accepted by the real API server.
	r.must(helm, "install", release, "charts/webhook-operator", "--namespace", releaseNS, "--create-namespace")
	r.kubectl("get", "crd", "webhookconfigs.webhooks.wablast.io")
	sa := strings.TrimSpace(r.kubectl("get", "serviceaccounts", "-n", releaseNS,
		"-l", "app.kubernetes.io/instance="+release, "-o", "jsonpath={.items[0].metadata.name}"))
	if sa == "" {
		t.Fatal("the chart installed no ServiceAccount")
	}

	// 2. The manager, out of the cluster, as the chart's ServiceAccount.
	managerKubeconfig := impersonatingKubeconfig(t, env.Kubeconfig, "system:serviceaccount:"+releaseNS+":"+sa)
	r.startProcess("receiver.log", filepath.Join(bin, "webhook-receiver"), "--listen", receiverAddr, "--secret", sampleSecret, "--quiet")
	mgr := r.startProcess("manager.log", filepath.Join(bin, "manager"),
		"--kubeconfig", managerKubeconfig,
		"--data-dir", filepath.Join(t.TempDir(), "nats"),
		"--leader-elect", "--leader-election-namespace", releaseNS,
		"--ingest-bind-address", ingestAddr,
		"--health-probe-bind-address", probesAddr,
		"--metrics-bind-address", "127.0.0.1:18080",
		"--egress-allow-cidrs", "127.0.0.0/8",
		"--status-flush-interval", "1s")
	r.eventually(90*time.Second, func() error {
		if mgr.ProcessState != nil {
			return fmt.Errorf("manager exited")
		}
		resp, err := http.Get("http://" + probesAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})

	// 3. kubectl apply the samples; kubectl wait.
	r.kubectl("create", "namespace", appNS)
	r.kubectl("apply", "-n", appNS, "-f", "config/samples/")
	r.kubectl("wait", "-n", appNS, "--for=condition=Ready", "whc/crm", "--timeout=90s")

	// 4. Post events with the sample token; the receiver verifies every signature.
	const n = 20
	for i := range n {
		body := fmt.Sprintf(`{"id":"e2e-%d","type":"message.sent","data":{"messageId":"m-%d","sessionId":"s-1","to":"+6281234567890"}}`, i, i)
		req, _ := http.NewRequest(http.MethodPost, "http://"+ingestAddr+"/v1/namespaces/"+appNS+"/events", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+sampleToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("post %d: %d", i, resp.StatusCode)
		}
	}
	r.eventually(60*time.Second, func() error {
		resp, err := http.Get("http://" + receiverAddr + "/stats")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var st struct{ Verified, Rejected, Unique int }
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return err
		}
		if st.Rejected != 0 {
			t.Fatalf("the receiver rejected %d signatures", st.Rejected)
		}
		if st.Unique != n {
			return fmt.Errorf("receiver verified %d unique events, want %d", st.Unique, n)
		}
		return nil
	})

	// 5. kubectl get whc shows the contract's columns with the right numbers.
	r.eventually(30*time.Second, func() error {
		out := r.kubectl("get", "whc", "-n", appNS)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME ACTIVE READY SUCCESS RATE SENT LAST DELIVERY AGE" {
			t.Fatalf("columns %q", got)
		}
		row := strings.Fields(lines[1])
		if row[0] != "crm" || row[1] != "true" || row[2] != "True" || row[3] != "100.0%" || row[4] != fmt.Sprint(n) {
			return fmt.Errorf("row %q", row)
		}
		return nil
	})

	// 6. kubectl webhook test --wait, through kubectl's plugin discovery.
	out := r.kubectl("webhook", "test", "crm", "-n", appNS, "--wait", "--timeout", "60s")
	if !strings.Contains(out, "Succeeded") {
		t.Errorf("kubectl webhook test: %s", out)
	}

	// 7. helm uninstall leaves no orphaned object but the kept CRD.
	_ = syscall.Kill(-mgr.Process.Pid, syscall.SIGTERM)
	r.must(helm, "uninstall", release, "--namespace", releaseNS, "--wait")
	for _, kind := range []string{"serviceaccounts,services,statefulsets,deployments,roles,rolebindings,configmaps,secrets,poddisruptionbudgets,networkpolicies,persistentvolumeclaims"} {
		if out := strings.TrimSpace(r.kubectl("get", kind, "-n", releaseNS, "-l", "app.kubernetes.io/instance="+release, "-o", "name")); out != "" {
			t.Errorf("left behind in %s:\n%s", releaseNS, out)
		}
	}
	if out := strings.TrimSpace(r.kubectl("get", "clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/instance="+release, "-o", "name")); out != "" {
		t.Errorf("cluster-scoped objects left behind:\n%s", out)
	}
	r.kubectl("get", "crd", "webhookconfigs.webhooks.wablast.io")
}
