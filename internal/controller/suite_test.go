package controller

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/testutil"
)

var env *testutil.Env

func TestMain(m *testing.M) { os.Exit(testutil.RunTests(m, &env)) }

// runningManager is a manager running the controller for one namespace.
type runningManager struct {
	registry *endpoint.MemoryRegistry
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once
}

// stop stops the manager and waits until it has.
func (m *runningManager) stop() {
	m.once.Do(func() {
		m.cancel()
		<-m.done
	})
}

// startManager runs the controller, watching only namespace ns, with a fresh registry.
func startManager(t *testing.T, ns string) *runningManager {
	t.Helper()
	mgr, err := ctrl.NewManager(env.Config, testutil.InProcessManagerOptions(ns))
	if err != nil {
		t.Fatalf("creating manager: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rm := &runningManager{registry: endpoint.NewMemoryRegistry(), cancel: cancel, done: make(chan struct{})}
	r := &WebhookConfigReconciler{
		Client:   mgr.GetClient(),
		Registry: rm.registry,
		Recorder: mgr.GetEventRecorder("webhook-operator"),
	}
	if err := r.SetupWithManager(ctx, mgr, ctrlcontroller.Options{}); err != nil {
		t.Fatalf("setting up controller: %v", err)
	}
	go func() {
		defer close(rm.done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager stopped with error: %v", err)
		}
	}()
	t.Cleanup(rm.stop)
	select {
	case <-rm.registry.Synced():
	case <-time.After(30 * time.Second):
		t.Fatal("registry not synced within 30s")
	}
	return rm
}
