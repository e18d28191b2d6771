// Command dev brings up a complete local WA Blast webhook system for `make
// dev`: a local control plane (etcd and kube-apiserver built from Go modules,
// as envtest uses) with the CRD installed, the manager with its embedded NATS,
// and the demo receiver. It applies nothing by itself, prints what to try,
// and on Ctrl-C stops every process it started and removes its data.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/wablast/webhook-operator/internal/testutil"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("bin", filepath.Join(testutil.RepoRoot(), "bin"), "Where manager and webhook-receiver are.")
	ingestAddr := flag.String("ingest-address", "127.0.0.1:8082", "The manager's ingestion API address.")
	receiverAddr := flag.String("receiver-address", "127.0.0.1:9000", "The demo receiver's address (config/samples points at 127.0.0.1:9000).")
	deliveryAPIAddr := flag.String("delivery-api-address", "127.0.0.1:8443", "The manager's delivery API address (delivery.wablast.io, HTTPS).")
	keep := flag.Bool("keep", false, "Keep the temporary folder (logs, store) on exit.")
	flag.Parse()

	samples := filepath.Join(testutil.RepoRoot(), "config", "samples")
	secret, token, err := sampleValues(samples)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "wablast-dev-")
	if err != nil {
		return err
	}
	if !*keep {
		defer func() { _ = os.RemoveAll(dir) }() // best effort: a temporary directory
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Println("Starting the local control plane (etcd, kube-apiserver)...")
	// With the aggregation layer, so kubectl get webhookdeliveries reaches
	// the manager through an APIService, as in a cluster.
	env, err := testutil.StartEnvWith(testutil.EnvOptions{InstallCRDs: true, Dir: dir, Aggregation: true})
	if err != nil {
		return err
	}
	defer env.Stop()

	var procs []*exec.Cmd
	defer func() { stopAll(procs) }()
	receiverLog := filepath.Join(dir, "receiver.log")
	rc, err := start(filepath.Join(*bin, "webhook-receiver"), receiverLog,
		"--listen", *receiverAddr, "--secret", secret)
	if err != nil {
		return err
	}
	procs = append(procs, rc)
	managerLog := filepath.Join(dir, "manager.log")
	mgr, err := start(filepath.Join(*bin, "manager"), managerLog,
		"--kubeconfig", env.Kubeconfig,
		"--data-dir", filepath.Join(dir, "nats"),
		"--egress-allow-cidrs", "127.0.0.0/8,::1/128",
		"--ingest-bind-address", *ingestAddr,
		"--metrics-bind-address", "127.0.0.1:8080",
		"--health-probe-bind-address", "127.0.0.1:8081",
		"--status-flush-interval", "2s",
		"--delivery-api-bind-address", *deliveryAPIAddr,
		"--zap-devel")
	if err != nil {
		return err
	}
	procs = append(procs, mgr)
	if err := waitReady(ctx, "http://127.0.0.1:8081/readyz", mgr); err != nil {
		return fmt.Errorf("%w (see %s)", err, managerLog)
	}
	if err := routeDeliveryAPI(ctx, env, *deliveryAPIAddr); err != nil {
		return fmt.Errorf("routing delivery.wablast.io to the manager: %w (see %s)", err, managerLog)
	}

	fmt.Printf(`
WA Blast webhook operator is running locally.

  Egress: loopback is allowed (--egress-allow-cidrs 127.0.0.0/8,::1/128) so
  deliveries reach the demo receiver; a real install refuses loopback and
  private networks (docs/architecture.md#egress-policy).

  kubeconfig:      %[1]s
  manager log:     %[2]s
  receiver output: %[3]s   (tail -f it to watch deliveries arrive)

Try it (in another terminal):

  export KUBECONFIG=%[1]s
  kubectl apply -f config/samples/
  kubectl get webhookconfigs
  curl -sS -X POST http://%[4]s/v1/namespaces/default/events \
    -H 'Authorization: Bearer %[5]s' -H 'Content-Type: application/json' \
    -d '{"type":"message.sent","data":{"messageId":"m-1","sessionId":"s-1","to":"+6281234567890"}}'
  tail -f %[3]s
  kubectl get whc crm -o wide
  kubectl get webhookdeliveries     # or: kubectl get whd -w, kubectl webhook deliveries crm
  PATH=$PWD/bin:$PATH kubectl webhook test crm --wait

Ctrl-C stops everything and removes %[6]s.
`, env.Kubeconfig, managerLog, receiverLog, *ingestAddr, token, dir)

	exited := make(chan error, 2)
	for _, p := range procs {
		go func() { exited <- p.Wait() }()
	}
	select {
	case <-ctx.Done():
		fmt.Println("\nStopping...")
		return nil
	case err := <-exited:
		return fmt.Errorf("a process exited unexpectedly: %w (logs in %s)", err, dir)
	}
}

// sampleValues reads the signing secret and the ingest token from config/samples,
// so the receiver and the printed curl always match what the samples apply.
func sampleValues(dir string) (secret, token string, err error) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", "", err
		}
		for _, doc := range bytes.Split(data, []byte("\n---")) {
			var obj struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				StringData map[string]string `json:"stringData"`
			}
			if yaml.Unmarshal(doc, &obj) != nil || obj.Kind != "Secret" {
				continue
			}
			if obj.Metadata.Labels["webhooks.wablast.io/ingest-token"] == "true" {
				token = obj.StringData["token"]
			} else if s, ok := obj.StringData["secret"]; ok {
				secret = s
			}
		}
	}
	if secret == "" || token == "" {
		return "", "", errors.New("config/samples must hold a signing Secret (stringData.secret) and an ingest token Secret")
	}
	return secret, token, nil
}

// start runs a binary in its own process group with output to logFile.
func start(path, logFile string, args ...string) (*exec.Cmd, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s is missing: run 'make build'", path)
	}
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	return cmd, nil
}

// stopAll sends SIGTERM to every process group, waits up to 10s, then kills.
func stopAll(procs []*exec.Cmd) {
	for _, p := range procs {
		if p.Process != nil {
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range procs {
		for p.ProcessState == nil && time.Now().Before(deadline) {
			if err := syscall.Kill(p.Process.Pid, 0); err != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
	}
}

func waitReady(ctx context.Context, url string, p *exec.Cmd) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := syscall.Kill(p.Process.Pid, 0); err != nil {
			return errors.New("the manager exited")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return errors.New("the manager did not become ready within 60s")
}

// routeDeliveryAPI makes the API server send delivery.wablast.io to the
// manager on loopback: a Service of type ExternalName (localhost, the API's
// port) and an APIService naming it. The manager's certificate is
// self-signed, so the APIService skips verifying it (local use only; the
// chart sets a caBundle).
func routeDeliveryAPI(ctx context.Context, env *testutil.Env, addr string) error {
	_, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "webhook-operator-delivery-api"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "https", Port: int32(port)}},
		},
	}
	if err := env.Client.Create(ctx, svc); err != nil {
		return err
	}
	apiSvc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1alpha1.delivery.wablast.io"},
		"spec": map[string]any{
			"group": "delivery.wablast.io", "version": "v1alpha1",
			"service":               map[string]any{"namespace": "default", "name": svc.Name, "port": int64(port)},
			"insecureSkipTLSVerify": true,
			"groupPriorityMinimum":  int64(1000), "versionPriority": int64(15),
		},
	}}
	return env.Client.Create(ctx, apiSvc)
}
