package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

func measureScale(ctx context.Context, sz sizes) *result {
	res := &result{}
	tmp, err := os.MkdirTemp("", "wablast-bench-scale-")
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

	mgr, err := startManagerProc(bin, tmp, env.Kubeconfig)
	if err != nil {
		return res.fail(err)
	}
	defer mgr.Stop()
	dataDir, pid := mgr.DataDir, mgr.Pid

	readyz := "http://" + mgr.ProbeAddr + "/readyz"
	if !waitFor(ctx, 60*time.Second, 200*time.Millisecond, func() bool {
		if mgr.Exited() {
			return false
		}
		resp, err := http.Get(readyz)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		return mgr.NotReady(res, 60*time.Second)
	}
	rssIdle := procStatusKB(pid, "VmRSS")
	cpuIdle := pidCPU(pid)

	// Watch readiness through an informer: one watch costs the API server
	// far less than polling Lists would on two shared cores.
	var readyCount atomic.Int64
	var readyMu sync.Mutex
	readySeen := make(map[string]bool, sz.ScaleConfigs)
	informers, err := cache.New(env.Config, cache.Options{Scheme: testutil.Scheme()})
	if err != nil {
		return res.fail(err)
	}
	inf, err := informers.GetInformer(ctx, &webhooksv1alpha1.WebhookConfig{})
	if err != nil {
		return res.fail(err)
	}
	observe := func(obj any) {
		w, ok := obj.(*webhooksv1alpha1.WebhookConfig)
		if !ok || !meta.IsStatusConditionTrue(w.Status.Conditions, "Ready") {
			return
		}
		key := w.Namespace + "/" + w.Name
		readyMu.Lock()
		if !readySeen[key] {
			readySeen[key] = true
			readyCount.Add(1)
		}
		readyMu.Unlock()
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		return res.fail(err)
	}
	infCtx, stopInformers := context.WithCancel(ctx)
	defer stopInformers()
	go func() { _ = informers.Start(infCtx) }()
	if !informers.WaitForCacheSync(infCtx) {
		return res.fail(errors.New("the readiness watch did not sync"))
	}

	// Create with a client limited to QPS 200 / burst 400.
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 200, 400
	cl, err := client.New(cfg, client.Options{Scheme: testutil.Scheme()})
	if err != nil {
		return res.fail(err)
	}
	secret, err := signing.GenerateSecret()
	if err != nil {
		return res.fail(err)
	}
	perNS := sz.ScaleConfigs / sz.ScaleNamespaces
	total := perNS * sz.ScaleNamespaces
	nsName := func(i int) string { return fmt.Sprintf("bench-scale-%03d", i) }

	var peakRSS atomic.Int64
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for {
			peakRSS.Store(max(peakRSS.Load(), procStatusKB(pid, "VmRSS")))
			select {
			case <-time.After(250 * time.Millisecond):
			case <-infCtx.Done():
				return
			}
		}
	}()

	start := time.Now()
	failed, ferr := runPosters(ctx, 32, sz.ScaleNamespaces, func(i int) error {
		if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i)}}); err != nil {
			return err
		}
		return cl.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsName(i), Name: "signing"}, StringData: map[string]string{"secret": secret}})
	})
	if failed > 0 {
		return res.fail(fmt.Errorf("creating namespaces and Secrets: %d failed, first: %w", failed, ferr))
	}
	failed, ferr = runPosters(ctx, 32, total, func(i int) error {
		ns := nsName(i % sz.ScaleNamespaces)
		name := fmt.Sprintf("whc-%04d", i/sz.ScaleNamespaces)
		return cl.Create(ctx, &webhooksv1alpha1.WebhookConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: webhooksv1alpha1.WebhookConfigSpec{
				URL:       "https://crm.example.com/hooks/" + ns + "/" + name,
				SecretRef: &webhooksv1alpha1.SecretKeyReference{Name: "signing"},
				Events:    []webhooksv1alpha1.EventType{"message.sent", "message.delivered", "message.failed"},
			},
		})
	})
	created := time.Since(start)
	if failed > 0 {
		return res.fail(fmt.Errorf("creating WebhookConfigs: %d failed, first: %w", failed, ferr))
	}
	budget := 3 * time.Minute
	allReady := waitFor(ctx, budget-created, 100*time.Millisecond, func() bool { return readyCount.Load() >= int64(total) })
	readyAfter := time.Since(start)
	ready := readyCount.Load()
	rssReady := procStatusKB(pid, "VmRSS")

	// Every endpoint also gets a durable JetStream consumer; wait (bounded)
	// until they exist so the peak memory includes them.
	consumersDir := filepath.Join(dataDir, "jetstream", "$G", "streams", store.StreamDeliveries, "obs")
	consumers := func() int {
		entries, _ := os.ReadDir(consumersDir)
		return len(entries)
	}
	allConsumers := waitFor(ctx, 60*time.Second, 500*time.Millisecond, func() bool { return consumers() >= total })
	consumersAfter := time.Since(start)
	time.Sleep(time.Second)
	hwm := procStatusKB(pid, "VmHWM")
	rss := procStatusKB(pid, "VmRSS")
	cpu := pidCPU(pid) - cpuIdle
	stopInformers()
	<-sampleDone

	// The authoritative count: one List of everything.
	var list webhooksv1alpha1.WebhookConfigList
	listed := 0
	if err := env.Client.List(ctx, &list); err == nil {
		for i := range list.Items {
			if strings.HasPrefix(list.Items[i].Namespace, "bench-scale-") && meta.IsStatusConditionTrue(list.Items[i].Status.Conditions, "Ready") {
				listed++
			}
		}
	}

	readyValue := readyAfter.Round(100 * time.Millisecond).String()
	if !allReady {
		readyValue = fmt.Sprintf("%d of %d Ready after %s", ready, total, readyAfter.Round(time.Second))
	}
	res.add(fmt.Sprintf("6. %d WebhookConfigs in %d namespaces: create to all Ready", total, sz.ScaleNamespaces), readyValue, "< 60 s", allReady && readyAfter < 60*time.Second)
	res.add("6. manager peak RSS (VmHWM)", mib(hwm*1024), "< 400 MiB", hwm*1024 < 400<<20)
	res.notef("The manager binary (%s) runs as a subprocess against a real kube-apiserver and etcd (testutil.StartEnv), with --data-dir in a temporary directory, --metrics-bind-address 0 and loopback probe and ingest ports; the embedded NATS server lives in its process.", how)
	res.notef("The harness creates %d namespaces, one signing Secret in each and %d WebhookConfigs (secretRef to it) from 32 goroutines through a client limited to QPS 200 / burst 400: creation took %s. Readiness is observed through one watch (an informer) rather than polling Lists, which on two shared cores would compete with the manager for the API server; a final cluster-wide List found %d of %d Ready.",
		sz.ScaleNamespaces, total, created.Round(100*time.Millisecond), listed, total)
	consumersValue := fmt.Sprintf("all %d after %s", total, consumersAfter.Round(100*time.Millisecond))
	if !allConsumers {
		consumersValue = fmt.Sprintf("%d of %d after %s", consumers(), total, consumersAfter.Round(time.Second))
	}
	res.notef("Durable JetStream delivery consumers (one per endpoint) existing: %s from the first create. Manager RSS idle before the creates %s, when all were Ready %s, at the end (consumers created) %s, sampled peak %s, VmHWM %s; manager CPU from the first create to the end %s.",
		consumersValue, mib(rssIdle*1024), mib(rssReady*1024), mib(rss*1024), mib(peakRSS.Load()*1024), mib(hwm*1024), cpu.Round(100*time.Millisecond))
	if !allReady || readyAfter >= 60*time.Second {
		res.findingf("Reaching Ready for %d WebhookConfigs took %s (target 60 s); creating them alone at QPS 200 took %s. The manager used %s of CPU in that time (see its log for the reconcile rate); the controller runs --max-concurrent-reconciles 4 and writes one status apply per resource.",
			total, readyAfter.Round(time.Second), created.Round(time.Second), cpu.Round(time.Second))
	}
	if hwm*1024 >= 400<<20 {
		res.findingf("The manager's peak RSS %s is over 400 MiB with %d endpoints. It was %s idle, %s when every WebhookConfig was Ready (informer caches, registry, status writes) and %s once the dispatcher had created one durable JetStream consumer per endpoint in the embedded server.",
			mib(hwm*1024), total, mib(rssIdle*1024), mib(rssReady*1024), mib(rss*1024))
	}
	return res
}

// managerBinary returns bin/manager when it is newer than every Go source,
// and otherwise builds ./cmd/manager into dir.
func managerBinary(ctx context.Context, dir string) (path, how string, err error) {
	root := testutil.RepoRoot()
	built := filepath.Join(root, "bin", "manager")
	if info, err := os.Stat(built); err == nil {
		newest := newestSource(root)
		if !info.ModTime().Before(newest) {
			return built, "bin/manager, built " + info.ModTime().Format(time.RFC3339) + ", newer than every source file", nil
		}
	}
	path = filepath.Join(dir, "manager")
	fmt.Fprintln(os.Stderr, "   building ./cmd/manager (bin/manager is missing or older than the sources)")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/manager")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building the manager: %w\n%s", err, out)
	}
	return path, fmt.Sprintf("go build ./cmd/manager from this tree, built by the harness in %s", time.Since(start).Round(time.Second)), nil
}

// newestSource is the newest modification time of the Go sources (tests
// excluded) and go.mod/go.sum the manager is built from.
func newestSource(root string) time.Time {
	var newest time.Time
	consider := func(path string) {
		if info, err := os.Stat(path); err == nil && info.ModTime().After(newest) {
			newest = info.ModTime()
		}
	}
	consider(filepath.Join(root, "go.mod"))
	consider(filepath.Join(root, "go.sum"))
	for _, sub := range []string{"api", "cmd", "internal"} {
		_ = filepath.WalkDir(filepath.Join(root, sub), func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
				consider(path)
			}
			return nil
		})
	}
	return newest
}
