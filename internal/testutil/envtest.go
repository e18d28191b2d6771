package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// EnvtestK8sVersion is the version of the control plane binaries the Makefile
// builds into bin/k8s/<version>.
const EnvtestK8sVersion = "1.37.2"

// RepoRoot returns the repository's root directory.
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("testutil: no caller information to find the repository root")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Scheme returns a scheme with the built-in types and the project's API.
func Scheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(webhooksv1alpha1.AddToScheme(s))
	return s
}

// Env is a running control plane with the project's CRDs installed.
type Env struct {
	Environment *envtest.Environment
	Config      *rest.Config
	Client      client.Client
	// Kubeconfig is the path of a kubeconfig file for kubectl and the binaries.
	Kubeconfig string
	ownDir     bool
}

// StartEnv starts etcd and kube-apiserver from KUBEBUILDER_ASSETS (or
// bin/k8s/<version> when unset) and installs config/crd/bases. Call Stop when done.
func StartEnv() (*Env, error) { return StartEnvWith(EnvOptions{InstallCRDs: true}) }

// EnvOptions tunes StartEnvWith.
type EnvOptions struct {
	// InstallCRDs installs config/crd/bases once the API server is up.
	InstallCRDs bool
	// Dir holds the kubeconfig; a new temporary directory when empty.
	Dir string
	// Aggregation turns on the API server's aggregation layer (a
	// front-proxy CA and client certificate in Dir), so APIServices work.
	Aggregation bool
}

// StartEnvWith starts the control plane as StartEnv does, with options.
func StartEnvWith(opts EnvOptions) (*Env, error) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(RepoRoot(), "bin", "k8s", EnvtestK8sVersion)
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("no kube-apiserver in %s: run 'make envtest-bin' (or 'make test', which builds it)", assets)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	ownDir := opts.Dir == ""
	if ownDir {
		dir, err := os.MkdirTemp("", "webhook-operator-envtest-")
		if err != nil {
			return nil, err
		}
		opts.Dir = dir
	}
	if opts.Aggregation {
		if err := configureAggregation(env, opts.Dir); err != nil {
			return nil, fmt.Errorf("configuring the aggregation layer: %w", err)
		}
	}
	if opts.InstallCRDs {
		env.CRDDirectoryPaths = []string{filepath.Join(RepoRoot(), "config", "crd", "bases")}
		env.ErrorIfCRDPathMissing = true
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the control plane: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	e := &Env{Environment: env, Config: cfg, Client: c, ownDir: ownDir}
	if e.Kubeconfig, err = e.writeKubeconfig(opts.Dir); err != nil {
		_ = env.Stop()
		return nil, err
	}
	return e, nil
}

// writeKubeconfig writes an admin kubeconfig for the control plane.
func (e *Env) writeKubeconfig(dir string) (string, error) {
	user, err := e.Environment.AddUser(envtest.User{Name: "envtest-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("adding admin user: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// RunTests is the body of a TestMain that needs a control plane: it starts
// one into *env, runs the tests, stops it and returns the exit code.
func RunTests(m *testing.M, env **Env) int {
	e, err := StartEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer e.Stop()
	*env = e
	return m.Run()
}

// Stop stops the control plane.
func (e *Env) Stop() {
	if e == nil {
		return
	}
	if e.ownDir {
		_ = os.RemoveAll(filepath.Dir(e.Kubeconfig))
	}
	_ = e.Environment.Stop()
}

// Namespace creates a fresh namespace for one test and deletes it at cleanup.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := "t-" + strings.ToLower(rand.String(8))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), ns) })
	return name
}

// Kubectl runs kubectl against the control plane and returns its combined output.
func (e *Env) Kubectl(ctx context.Context, args ...string) (string, error) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		return "", fmt.Errorf("kubectl not found on PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Eventually calls check until it returns nil or timeout passes, then fails
// the test with the last error.
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	EventuallyEvery(t, timeout, 50*time.Millisecond, check)
}

// EventuallyEvery polls check every interval until it returns nil, or fails
// the test with the last error after timeout.
func EventuallyEvery(t testing.TB, timeout, interval time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}
