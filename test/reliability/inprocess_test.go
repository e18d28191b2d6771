//go:build reliability

package reliability

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// inProcess is the operator's real wiring (internal/operator, as
// cmd/manager uses it) running inside the test process, scoped to one
// namespace.
type inProcess struct {
	op     *operator.Operator
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func (r *inProcess) stop() {
	r.once.Do(func() {
		r.cancel()
		<-r.done
		r.op.Close()
	})
}

func startInProcess(t *testing.T, ns, dataDir string) *inProcess {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 testutil.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	op, err := operator.Setup(ctx, mgr, operator.Config{
		DataDir:             dataDir,
		EgressAllowCIDRs:    []string{"127.0.0.0/8"},
		StatusFlushInterval: time.Second,
		IngestAddr:          "127.0.0.1:0",
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &inProcess{op: op, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(r.stop)
	waitFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if err := op.Ready(); err != nil {
			return err
		}
		if op.Ingest.Addr() == "" {
			return errNotYet
		}
		return nil
	})
	return r
}
