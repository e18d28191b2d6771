package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/ingest"
	"github.com/wablast/webhook-operator/internal/stats"
	"github.com/wablast/webhook-operator/internal/status"
	"github.com/wablast/webhook-operator/internal/store"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// pipeline is the operator's delivery path without Kubernetes: the real
// JetStream file store in a fresh directory, the real dispatcher with a
// MemoryRegistry, the real aggregator run by the real status.Writer, and the
// real ingestion server on 127.0.0.1:0. Only two things are stand-ins: the
// status.Writer's client is a fake whose status applies are counted and
// discarded (the status measurement uses a real API server), and the
// ingestion API checks one static bearer token in memory (the manager's
// KubeAuthenticator caches its decisions, so it is out of the hot path).
type pipeline struct {
	dir        string
	Store      *store.Store
	Registry   *endpoint.MemoryRegistry
	Dispatcher *delivery.Dispatcher
	Aggregator *stats.Aggregator
	Ingest     *ingest.Server
	// StatusApplies counts the status.Writer's (discarded) status writes.
	StatusApplies atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	errs   []error
}

// defaultPolicy is the delivery policy the CRD defaults give a WebhookConfig.
func defaultPolicy() endpoint.Policy {
	return endpoint.Policy{
		Timeout:        10 * time.Second,
		MaxAttempts:    10,
		InitialBackoff: 5 * time.Second,
		MaxBackoff:     21600 * time.Second,
		MaxAge:         259200 * time.Second,
		MaxInFlight:    maxInFlight,
	}
}

// maxInFlight is the endpoints' maxInFlight in the standalone measurements:
// the CRD default unless -max-in-flight says otherwise.
var maxInFlight = 16

// storeSync is the pipelines' store.Options.Sync (-store-sync).
var storeSync time.Duration

// benchEndpoint is an enabled endpoint of benchNS subscribed to every type.
func benchEndpoint(name, url string, keys [][]byte) endpoint.Endpoint {
	return endpoint.Endpoint{
		Namespace: benchNS, Name: name, UID: uuid.NewUUID(), Generation: 1,
		URL: url, Keys: keys, Events: []string{"*"}, Enabled: true, Policy: defaultPolicy(),
	}
}

// staticAuth accepts one bearer token in benchNS.
var staticAuth = ingest.AuthenticatorFunc(func(_ context.Context, token, namespace string) error {
	if subtle.ConstantTimeCompare([]byte(token), []byte(staticToken)) != 1 {
		return fmt.Errorf("unknown token: %w", ingest.ErrUnauthenticated)
	}
	if namespace != benchNS {
		return fmt.Errorf("token not valid in %s: %w", namespace, ingest.ErrForbidden)
	}
	return nil
})

// startPipeline starts everything with eps registered and the registry
// marked synced, and returns once the ingestion API listens.
func startPipeline(ctx context.Context, eps []endpoint.Endpoint) (*pipeline, error) {
	return startPipelineWith(ctx, eps, pipelineOptions{Leader: true})
}

// pipelineOptions makes a pipeline one replica of several.
type pipelineOptions struct {
	// NATSURL connects to a NATS server shared with other pipelines instead
	// of an embedded one.
	NATSURL string
	// Leader runs the status.Writer (with the aggregator); one replica does.
	Leader bool
}

func startPipelineWith(ctx context.Context, eps []endpoint.Endpoint, opts pipelineOptions) (*pipeline, error) {
	dir, err := os.MkdirTemp("", "wablast-bench-store-")
	if err != nil {
		return nil, err
	}
	p := &pipeline{dir: dir, Registry: endpoint.NewMemoryRegistry()}
	ok := false
	defer func() {
		if !ok {
			p.stop()
		}
	}()
	if p.Store, err = store.Open(ctx, store.Options{DataDir: dir, URL: opts.NATSURL, Sync: storeSync}); err != nil {
		return nil, err
	}
	egress, err := delivery.NewEgressPolicy([]string{"127.0.0.0/8"}, nil)
	if err != nil {
		return nil, err
	}
	for _, ep := range eps {
		p.Registry.Upsert(ep)
	}
	p.Registry.MarkSynced()
	p.Dispatcher, err = delivery.New(delivery.Options{
		Registry:   p.Registry,
		Store:      p.Store,
		HTTPClient: delivery.NewHTTPClient(egress),
		UserAgent:  "wablast-webhook-operator/bench",
		Metrics:    delivery.NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		return nil, err
	}
	p.Aggregator = stats.NewAggregator(p.Store, nil)
	writer := &status.Writer{
		Aggregator:    p.Aggregator,
		Client:        p.countingClient(),
		FlushInterval: 5 * time.Second,
	}
	p.Ingest, err = ingest.New(ingest.Options{Addr: "127.0.0.1:0", Enqueuer: p.Dispatcher, Auth: staticAuth})
	if err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	runnables := []interface{ Start(context.Context) error }{p.Dispatcher, p.Ingest}
	if opts.Leader {
		runnables = append(runnables, writer)
	}
	for _, r := range runnables {
		p.wg.Go(func() {
			if err := r.Start(runCtx); err != nil {
				p.errMu.Lock()
				p.errs = append(p.errs, err)
				p.errMu.Unlock()
			}
		})
	}
	if !waitFor(ctx, 10*time.Second, 5*time.Millisecond, func() bool { return p.Ingest.Addr() != "" }) {
		return nil, errors.New("the ingestion API did not start listening")
	}
	ok = true
	return p, nil
}

// countingClient is the status.Writer's client: status applies are counted
// and succeed without being stored.
func (p *pipeline) countingClient() client.Client {
	return fake.NewClientBuilder().WithScheme(testutil.Scheme()).WithInterceptorFuncs(interceptor.Funcs{
		SubResourceApply: func(context.Context, client.Client, string, runtime.ApplyConfiguration, ...client.SubResourceApplyOption) error {
			p.StatusApplies.Add(1)
			return nil
		},
	}).Build()
}

// EventsURL is the ingestion URL of benchNS.
func (p *pipeline) EventsURL() string {
	return "http://" + p.Ingest.Addr() + "/v1/namespaces/" + benchNS + "/events"
}

// stop stops every runnable, closes the store and removes its directory.
func (p *pipeline) stop() {
	if p.cancel != nil {
		p.cancel()
		p.wg.Wait()
	}
	if p.Store != nil {
		p.Store.Close()
	}
	_ = os.RemoveAll(p.dir)
}

// err returns the first error a runnable stopped with.
func (p *pipeline) err() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return errors.Join(p.errs...)
}
