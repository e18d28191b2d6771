// Package integration runs the operator's real wiring (internal/operator:
// controller, dispatcher with embedded NATS, status writer) against a real
// API server, with receivers on loopback.
package integration

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/wablast/webhook-operator/internal/dispatch"
	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/testutil"
)

var env *testutil.Env

func TestMain(m *testing.M) { os.Exit(testutil.RunTests(m, &env)) }

// statusWrites counts the dispatcher's status writes (server-side apply
// PATCHes of the status subresource under its field manager) per resource.
type statusWrites struct {
	mu    sync.Mutex
	count map[string]int
	total atomic.Int64
}

func (s *statusWrites) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/status") &&
			r.URL.Query().Get("fieldManager") == dispatch.StatusFieldManager {
			s.mu.Lock()
			s.count[r.URL.Path]++
			s.mu.Unlock()
			s.total.Add(1)
		}
		return rt.RoundTrip(r)
	})
}

func (s *statusWrites) max() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := 0
	for _, n := range s.count {
		m = max(m, n)
	}
	return m
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// running is one operator (manager + store) scoped to a namespace.
type running struct {
	op     *operator.Operator
	writes *statusWrites
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func (r *running) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.op.Close()
	})
}

// startOperator runs the operator's wiring for namespace ns on dataDir.
func startOperator(t *testing.T, ns, dataDir string, mutate ...func(*operator.Config)) *running {
	t.Helper()
	writes := &statusWrites{count: map[string]int{}}
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(writes.wrap)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testutil.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ocfg := operator.Config{
		DataDir:             dataDir,
		EgressAllowCIDRs:    []string{"127.0.0.0/8"},
		StatusFlushInterval: time.Second,
		IngestAddr:          "127.0.0.1:0",
	}
	for _, m := range mutate {
		m(&ocfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	op, err := operator.Setup(ctx, mgr, ocfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &running{op: op, writes: writes, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	testutil.Eventually(t, 30*time.Second, op.Ready)
	return r
}
