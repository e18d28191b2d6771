// Command secretmem measures what unrelated Secrets cost the manager's
// memory. It starts a control plane (envtest, KUBEBUILDER_ASSETS), creates
// -secrets Secrets of -secret-bytes of data each across -namespaces
// namespaces, none of them named by a WebhookConfig, and then runs each
// manager binary given with -manager in turn against it: it waits for
// /readyz, creates a WebhookConfig with its own signing Secret and waits until
// it is Ready (so the controller's watches, the Secret one included, have
// synced), lets the process settle, and reads VmHWM and VmRSS from
// /proc/PID/status and HeapInuse from the manager's pprof endpoint.
//
//	go build -o bin/manager ./cmd/manager
//	KUBEBUILDER_ASSETS=bin/k8s/1.37.2 go run ./hack/secretmem \
//	    -manager before=/path/to/old/bin/manager -manager after=bin/manager
//
// docs/operations.md ("Memory and the cluster's Secrets") has the results.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// managers is the repeated -manager label=path flag.
type managers [][2]string

func (m *managers) String() string { return fmt.Sprint(*m) }
func (m *managers) Set(v string) error {
	label, path, ok := strings.Cut(v, "=")
	if !ok || label == "" || path == "" {
		return errors.New("want label=path")
	}
	*m = append(*m, [2]string{label, path})
	return nil
}

func main() {
	var (
		bins        managers
		secrets     = flag.Int("secrets", 10000, "How many unrelated Secrets to create.")
		secretBytes = flag.Int("secret-bytes", 4096, "The size of each Secret's data.")
		namespaces  = flag.Int("namespaces", 10, "How many namespaces the Secrets are spread over.")
		settle      = flag.Duration("settle", 20*time.Second, "How long to let each manager settle once its WebhookConfig is Ready before reading its memory.")
		runs        = flag.Int("runs", 1, "How many times to run each manager (in turn: a, b, a, b, ...).")
	)
	flag.Var(&bins, "manager", "label=path of a manager binary; repeat to compare.")
	flag.Parse()
	if len(bins) == 0 {
		fmt.Fprintln(os.Stderr, "usage: secretmem -manager label=path [-manager label=path ...]")
		os.Exit(2)
	}
	if err := run(bins, *secrets, *secretBytes, *namespaces, *settle, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type sample struct {
	label        string
	hwmKB, rssKB int64
	heapInuse    int64
	readyAfter   time.Duration
}

func run(bins managers, secrets, secretBytes, namespaces int, settle time.Duration, runs int) error {
	ctx := context.Background()
	env, err := testutil.StartEnv()
	if err != nil {
		return err
	}
	defer env.Stop()

	start := time.Now()
	if err := createSecrets(ctx, env.Config, secrets, secretBytes, namespaces); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "created %d Secrets of %d bytes in %d namespaces in %s\n", secrets, secretBytes, namespaces, time.Since(start).Round(time.Second))

	var results []sample
	for i := range runs {
		for _, b := range bins {
			s, err := measure(ctx, env, b[0], b[1], fmt.Sprintf("probe-%d-%s", i, b[0]), settle)
			if err != nil {
				return fmt.Errorf("%s: %w", b[0], err)
			}
			fmt.Fprintf(os.Stderr, "%s: VmHWM %.1f MiB, VmRSS %.1f MiB, HeapInuse %.1f MiB\n", s.label, mib(s.hwmKB<<10), mib(s.rssKB<<10), mib(s.heapInuse))
			results = append(results, s)
		}
	}
	fmt.Printf("%d unrelated Secrets of %d bytes of data in %d namespaces; each manager measured %s after its WebhookConfig became Ready.\n\n", secrets, secretBytes, namespaces, settle)
	fmt.Println("| manager | ready after | VmHWM (peak RSS) | VmRSS | Go HeapInuse |")
	fmt.Println("|---|---|---|---|---|")
	for _, s := range results {
		fmt.Printf("| %s | %s | %.1f MiB | %.1f MiB | %.1f MiB |\n", s.label, s.readyAfter.Round(100*time.Millisecond), mib(s.hwmKB<<10), mib(s.rssKB<<10), mib(s.heapInuse))
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// createSecrets creates n Secrets of size bytes of random data over ns
// namespaces, from 16 goroutines.
func createSecrets(ctx context.Context, restCfg *rest.Config, n, size, ns int) error {
	cfg := rest.CopyConfig(restCfg)
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := client.New(cfg, client.Options{Scheme: testutil.Scheme()})
	if err != nil {
		return err
	}
	for i := range ns {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("unrelated-%d", i)}}); err != nil {
			return err
		}
	}
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				data := make([]byte, size)
				_, _ = rand.Read(data)
				s := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("unrelated-%d", i%ns), Name: fmt.Sprintf("secret-%05d", i)},
					Data:       map[string][]byte{"data": data},
				}
				if err := c.Create(ctx, s); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	for i := range n {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			wg.Wait()
			return err
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// measure runs one manager binary until its probe WebhookConfig is Ready,
// lets it settle and reads its memory.
func measure(ctx context.Context, env *testutil.Env, label, bin, probe string, settle time.Duration) (sample, error) {
	s := sample{label: label}
	tmp, err := os.MkdirTemp("", "secretmem-")
	if err != nil {
		return s, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = testutil.FreeLoopbackPort(); err != nil {
			return s, err
		}
	}
	logFile, err := os.Create(filepath.Join(tmp, "manager.log"))
	if err != nil {
		return s, err
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(bin,
		"--data-dir", filepath.Join(tmp, "data"),
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--ingest-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--delivery-api-bind-address", "0",
		"--pprof-bind-address", fmt.Sprintf("127.0.0.1:%d", ports[2]),
	)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			_ = err // it was stopped
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			if err := <-exited; err != nil {
				fmt.Fprintf(os.Stderr, "the manager, killed: %v\n", err)
			}
		}
	}()
	fail := func(err error) (sample, error) {
		tail, _ := os.ReadFile(logFile.Name())
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		return s, fmt.Errorf("%w; manager log tail:\n%s", err, tail)
	}
	alive := func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("the manager exited: %w", err)
		default:
			return nil
		}
	}

	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[0])
	if err := poll(120*time.Second, func() error {
		if err := alive(); err != nil {
			return err
		}
		resp, err := http.Get(readyz)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %d", resp.StatusCode)
		}
		return nil
	}); err != nil {
		return fail(err)
	}

	// A WebhookConfig of its own, with a Secret, Ready: the controller runs
	// and its Secret watch has synced.
	value, err := signing.GenerateSecret()
	if err != nil {
		return s, err
	}
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated-0", Name: probe + "-secret"},
		StringData: map[string]string{"secret": value}}); err != nil {
		return s, err
	}
	if err := env.Client.Create(ctx, &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "unrelated-0", Name: probe},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:       "https://crm.example.com/hooks",
			SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: probe + "-secret"},
			Events:    []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
		},
	}); err != nil {
		return s, err
	}
	if err := poll(120*time.Second, func() error {
		if err := alive(); err != nil {
			return err
		}
		var w webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: "unrelated-0", Name: probe}, &w); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") {
			return errors.New("the probe WebhookConfig is not Ready")
		}
		return nil
	}); err != nil {
		return fail(err)
	}
	s.readyAfter = time.Since(started)

	// Settle: the informers' initial lists are garbage once synced.
	deadline := time.Now().Add(settle)
	for time.Now().Before(deadline) {
		if err := alive(); err != nil {
			return fail(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	pid := cmd.Process.Pid
	s.hwmKB, s.rssKB = procStatusKB(pid, "VmHWM"), procStatusKB(pid, "VmRSS")
	s.heapInuse, err = heapInuse(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?debug=1", ports[2]))
	if err != nil {
		return fail(err)
	}
	return s, nil
}

// heapInuse reads "# HeapInuse = N" from a debug=1 heap profile.
func heapInuse(url string) (int64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no HeapInuse in the heap profile")
}

// procStatusKB reads a "VmHWM:"-style field of /proc/<pid>/status in KiB.
func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// poll calls check every 200 ms until it returns nil, or returns its last
// error after timeout.
func poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
