// Package operatortest runs the operator's real wiring (internal/operator,
// as cmd/manager uses it) inside a test or benchmark process, against a real
// API server, and counts the dispatcher's status writes. The integration
// tests, the reliability suite and the benchmark harness share it.
package operatortest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/status"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// Config is the operator configuration the tests start from: the store in
// dataDir, egress to loopback allowed (receivers are httptest servers),
// status flushed every second, the ingestion API on a free loopback port.
func Config(dataDir string) operator.Config {
	return operator.Config{
		DataDir:             dataDir,
		EgressAllowCIDRs:    []string{"127.0.0.0/8"},
		StatusFlushInterval: time.Second,
		IngestAddr:          "127.0.0.1:0",
	}
}

// Instance is one running operator: a controller-runtime manager with the
// operator set up on it, scoped to one namespace.
type Instance struct {
	Op *operator.Operator
	// Writes are the dispatcher's status writes, as sent to the API server.
	Writes *StatusWrites
	// Cache is the manager's cache, to look at what it holds.
	Cache cache.Cache

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Start runs the operator for namespace ns (cfg.WatchNamespaces, when set,
// instead) with cfg against the API server at restCfg, and returns once it is ready (registry rebuilt, store
// connected, ingestion API listening), or an error after ready wait.
func Start(restCfg *rest.Config, ns string, cfg operator.Config, ready time.Duration) (*Instance, error) {
	writes := &StatusWrites{}
	rc := rest.CopyConfig(restCfg)
	rc.Wrap(writes.wrap)
	if len(cfg.WatchNamespaces) == 0 {
		cfg.WatchNamespaces = []string{ns}
	}
	// The cache and client options cmd/manager uses, for cfg.WatchNamespaces.
	opts := testutil.InProcessManagerOptions(ns)
	opts.Cache = operator.CacheOptions(cfg.WatchNamespaces)
	opts.Client = operator.ClientOptions()
	mgr, err := ctrl.NewManager(rc, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	op, err := operator.Setup(ctx, mgr, cfg)
	if err != nil {
		cancel()
		return nil, err
	}
	in := &Instance{Op: op, Writes: writes, Cache: mgr.GetCache(), cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- mgr.Start(ctx) }()
	deadline := time.Now().Add(ready)
	for {
		err := op.Ready()
		if err == nil && op.Ingest.Addr() == "" {
			err = errors.New("the ingestion API is not listening yet")
		}
		if err == nil {
			return in, nil
		}
		select {
		case merr := <-in.done:
			in.done <- merr
			_ = in.Stop() // returns merr
			return nil, fmt.Errorf("the manager stopped before it was ready: %w", merr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			err = fmt.Errorf("not ready within %s: %w", ready, err)
			if serr := in.Stop(); serr != nil {
				err = fmt.Errorf("%w; stopping: %w", err, serr)
			}
			return nil, err
		}
	}
}

// Stop stops the manager (waiting up to 45 s for it) and closes the store.
// It returns what the manager stopped with; safe to call more than once.
func (in *Instance) Stop() error {
	in.once.Do(func() {
		in.cancel()
		select {
		case in.err = <-in.done:
		case <-time.After(45 * time.Second):
			in.err = errors.New("the manager did not stop within 45s")
		}
		in.Op.Close()
	})
	return in.err
}

// StatusWrites records the dispatcher's status writes: server-side apply
// PATCHes of the status subresource under its field manager.
type StatusWrites struct {
	mu     sync.Mutex
	writes []StatusWrite
}

// StatusWrite is one status write: when, and the resource's status path.
type StatusWrite struct {
	At   time.Time
	Path string
}

func (s *StatusWrites) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/status") &&
			r.URL.Query().Get("fieldManager") == status.DeliveryFieldManager {
			s.mu.Lock()
			s.writes = append(s.writes, StatusWrite{At: time.Now(), Path: r.URL.Path})
			s.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

// All returns every write so far, oldest first.
func (s *StatusWrites) All() []StatusWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.writes)
}

// Total is the number of writes so far.
func (s *StatusWrites) Total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.writes)
}

// MaxPerResource is the largest number of writes to one resource.
func (s *StatusWrites) MaxPerResource() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	count := map[string]int{}
	m := 0
	for _, w := range s.writes {
		count[w.Path]++
		m = max(m, count[w.Path])
	}
	return m
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
