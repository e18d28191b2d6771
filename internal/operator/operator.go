// Package operator wires the controller, the dispatcher and the ingestion API
// into a controller-runtime manager. cmd/manager and the integration tests
// share it, so the tests run exactly what ships.
package operator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wablast/webhook-operator/internal/controller"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/deliveryapi"
	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/ingest"
	"github.com/wablast/webhook-operator/internal/stats"
	"github.com/wablast/webhook-operator/internal/status"
	"github.com/wablast/webhook-operator/internal/store"
)

// Version is the product version sent in the User-Agent of deliveries.
var Version = "0.1.0-dev"

// Config is the operator's configuration, from flags.
type Config struct {
	// DataDir is the embedded NATS file store directory.
	DataDir string
	// NATSURL selects an external NATS cluster instead of the embedded server.
	NATSURL string
	// NATSReplicas is the replication factor of streams and buckets.
	NATSReplicas int
	// EgressAllowCIDRs and EgressDenyCIDRs widen and narrow the egress policy.
	EgressAllowCIDRs []string
	EgressDenyCIDRs  []string
	// StatusFlushInterval bounds status writes per resource.
	StatusFlushInterval time.Duration
	// FailedRetention is how long deliveries that failed for good are kept for replay.
	FailedRetention time.Duration
	// IdempotencyWindow is how long an event id posted by a producer is
	// remembered (24h when zero).
	IdempotencyWindow time.Duration
	// MaxConcurrentReconciles of the WebhookConfig controller.
	MaxConcurrentReconciles int
	// IngestAddr is the ingestion API's listen address; "127.0.0.1:0" picks a port.
	IngestAddr string
	// MaxEventBytes is the per-event size limit of the ingestion API.
	MaxEventBytes int64
	// MaxBatchBytes is the batch body size limit of the ingestion API
	// (ingest.DefaultMaxBatchBytes when 0).
	MaxBatchBytes int64
	// MaxDecodingBytes bounds the request bodies the ingestion API holds at
	// once (ingest.DefaultMaxDecodingBytes when 0).
	MaxDecodingBytes int64
	// AuthCacheTTL is how long ingestion authorization decisions are cached.
	AuthCacheTTL time.Duration
	// StoreMaxBytes is store.Options.MaxBytes (0: 85% of the data
	// directory's file system with the embedded server).
	StoreMaxBytes int64
	// StoreSync is store.Options.Sync (0: every 2 minutes).
	StoreSync time.Duration
	// IngestAuth configures the ingestion API's authenticator: the limits
	// on TokenReviews of tokens not known yet, and whether tokens for the
	// API server's audience are accepted (its CacheTTL is ignored:
	// AuthCacheTTL is used). Zero values take the defaults.
	IngestAuth ingest.KubeAuthOptions
	// ReviewAPIQPS and ReviewAPIBurst are the client rate limit of the
	// Kubernetes client that makes TokenReviews and SubjectAccessReviews,
	// apart from the controller's (DefaultReviewAPIQPS and
	// DefaultReviewAPIBurst when 0).
	ReviewAPIQPS   float32
	ReviewAPIBurst int
	// GroupCommitDelay is delivery.Options.GroupCommitDelay: 0 takes the
	// default, negative turns it off.
	GroupCommitDelay time.Duration
	// WatchNamespaces limits the operator to these namespaces
	// (--watch-namespaces); empty means every namespace. The manager's cache
	// must be limited the same way: see CacheOptions.
	WatchNamespaces []string
	// DeliveryLogRetention is how long the delivery log keeps a record
	// (--delivery-log-retention); 0 turns the log and its API off.
	DeliveryLogRetention time.Duration
	// DeliveryLogMaxBytes caps the delivery log (store.DefaultDeliveryLogMaxBytes when 0).
	DeliveryLogMaxBytes int64
	// DeliveryLogMaxRecords caps the delivery log's records
	// (store.DefaultDeliveryLogMaxRecords when 0, none when negative).
	DeliveryLogMaxRecords int64
	// DeliveryLogBodyBytes caps the bodies the log keeps (store.DefaultDeliveryLogBodyBytes when 0).
	DeliveryLogBodyBytes int
	// DeliveryAPIAddr is where the delivery.wablast.io API is served
	// (HTTPS); empty serves none. "127.0.0.1:0" picks a port.
	DeliveryAPIAddr string
	// DeliveryAPICertDir holds the API's serving certificate (tls.crt,
	// tls.key); empty or missing files: a self-signed one is made.
	DeliveryAPICertDir string
}

// CacheOptions are the manager's cache options for an operator that serves
// watchNamespaces (every namespace when empty). Secrets are cached as
// metadata only (the controller's watch asks for no more), and of that
// metadata only what maps a Secret to the WebhookConfigs reading it is kept:
// annotations (kubectl's last-applied-configuration holds a Secret's data)
// and managedFields are dropped.
func CacheOptions(watchNamespaces []string) cache.Options {
	opts := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Transform: stripSecretMetadata},
		},
	}
	if len(watchNamespaces) > 0 {
		opts.DefaultNamespaces = make(map[string]cache.Config, len(watchNamespaces))
		for _, ns := range watchNamespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// ClientOptions are the manager's client options: Secrets are never read
// from the cache, so that no code path can make the manager start an
// informer holding the values of every Secret it may list.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}}
}

// stripSecretMetadata drops what the cache does not need of a Secret: its
// annotations and managedFields (and, should a full Secret ever reach the
// cache, its data).
func stripSecretMetadata(in any) (any, error) {
	switch o := in.(type) {
	case *metav1.PartialObjectMetadata:
		o.Annotations, o.ManagedFields = nil, nil
	case *corev1.Secret:
		o.Annotations, o.ManagedFields, o.Data, o.StringData = nil, nil, nil, nil
	}
	return in, nil
}

// The defaults of Config.ReviewAPIQPS and ReviewAPIBurst: a review is two
// requests (TokenReview, SubjectAccessReview), so this is a little more than
// ingest.DefaultReviewRate and DefaultReviewBurst need.
const (
	DefaultReviewAPIQPS   = 50
	DefaultReviewAPIBurst = 100
)

// Operator is everything Setup added to the manager.
type Operator struct {
	Registry   *endpoint.MemoryRegistry
	Store      *store.Store
	Dispatcher *delivery.Dispatcher
	Aggregator *stats.Aggregator
	// StatusWriter writes the delivery status (on the leader only).
	StatusWriter *status.Writer
	Ingest       *ingest.Server
	// DeliveryAPI serves delivery.wablast.io; nil when it is off.
	DeliveryAPI *deliveryapi.Server
	// DeliveryAPIAddr is the address it listens on.
	DeliveryAPIAddr string
}

// Setup opens the store and adds the controller, the dispatcher and the
// status writer to mgr. Call Close after the manager stopped.
func Setup(ctx context.Context, mgr ctrl.Manager, cfg Config) (*Operator, error) {
	egress, err := delivery.NewEgressPolicy(cfg.EgressAllowCIDRs, cfg.EgressDenyCIDRs)
	if err != nil {
		return nil, err
	}
	store, err := store.Open(ctx, store.Options{
		DataDir: cfg.DataDir, URL: cfg.NATSURL, Replicas: cfg.NATSReplicas, FailedRetention: cfg.FailedRetention,
		IdempotencyWindow: cfg.IdempotencyWindow, MaxBytes: cfg.StoreMaxBytes, Sync: cfg.StoreSync,
		DeliveryLogRetention: cfg.DeliveryLogRetention, DeliveryLogMaxBytes: cfg.DeliveryLogMaxBytes,
		DeliveryLogMaxRecords: cfg.DeliveryLogMaxRecords,
		Logger:                mgr.GetLogger().WithName("store"),
	})
	if err != nil {
		return nil, fmt.Errorf("opening the event store: %w", err)
	}
	op := &Operator{Registry: endpoint.NewMemoryRegistry(), Store: store}
	ok := false
	defer func() {
		if !ok {
			store.Close()
		}
	}()

	recorder := mgr.GetEventRecorder("webhook-operator")
	op.Dispatcher, err = delivery.New(delivery.Options{
		Registry:             op.Registry,
		Store:                store,
		HTTPClient:           delivery.NewHTTPClient(egress),
		UserAgent:            "wablast-webhook-operator/" + Version,
		GroupCommitDelay:     cfg.GroupCommitDelay,
		DeliveryLogBodyBytes: cfg.DeliveryLogBodyBytes,
		Metrics:              delivery.NewMetrics(metrics.Registry),
		Logger:               ctrl.Log.WithName("dispatcher"),
		Reporter:             &status.Reporter{Client: mgr.GetClient(), Recorder: recorder},
		IsLeader:             isLeader(mgr),
	})
	if err != nil {
		return nil, err
	}
	if err := (&controller.WebhookConfigReconciler{
		Client:       mgr.GetClient(),
		SecretReader: mgr.GetAPIReader(),
		Registry:     op.Registry,
		Recorder:     recorder,
		Actions:      op.Dispatcher,
		IsLeader:     isLeader(mgr),
	}).SetupWithManager(ctx, mgr, ctrlcontroller.Options{MaxConcurrentReconciles: cfg.MaxConcurrentReconciles}); err != nil {
		return nil, fmt.Errorf("setting up the WebhookConfig controller: %w", err)
	}
	if err := mgr.Add(op.Dispatcher); err != nil {
		return nil, err
	}
	op.Aggregator = stats.NewAggregator(store, nil)
	op.StatusWriter = &status.Writer{
		Aggregator:    op.Aggregator,
		Client:        mgr.GetClient(),
		Recorder:      recorder,
		FlushInterval: cfg.StatusFlushInterval,
		Logger:        ctrl.Log.WithName("status-writer"),
	}
	if err := mgr.Add(op.StatusWriter); err != nil {
		return nil, err
	}

	// The reviews get a client, and so a client-side rate limit, of their
	// own: unknown tokens cannot use up the controller's.
	reviewCfg := rest.CopyConfig(mgr.GetConfig())
	reviewCfg.QPS, reviewCfg.Burst, reviewCfg.RateLimiter = cfg.ReviewAPIQPS, cfg.ReviewAPIBurst, nil
	if reviewCfg.QPS <= 0 {
		reviewCfg.QPS = DefaultReviewAPIQPS
	}
	if reviewCfg.Burst <= 0 {
		reviewCfg.Burst = DefaultReviewAPIBurst
	}
	cs, err := kubernetes.NewForConfig(reviewCfg)
	if err != nil {
		return nil, err
	}
	authOpts := cfg.IngestAuth
	authOpts.CacheTTL = cfg.AuthCacheTTL
	op.Ingest, err = ingest.New(ingest.Options{
		Addr:             cfg.IngestAddr,
		Enqueuer:         op.Dispatcher,
		Auth:             ingest.NewKubeAuthenticator(cs, mgr.GetAPIReader(), authOpts).LimitToNamespaces(cfg.WatchNamespaces),
		MaxEventBytes:    cfg.MaxEventBytes,
		MaxBatchBytes:    cfg.MaxBatchBytes,
		MaxDecodingBytes: cfg.MaxDecodingBytes,
		Ready:            op.Ready,
		Metrics:          ingest.NewMetrics(metrics.Registry),
		Logger:           ctrl.Log.WithName("ingest"),
	})
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(op.Ingest); err != nil {
		return nil, err
	}

	if cfg.DeliveryAPIAddr != "" && store.DeliveryLog() {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.DeliveryAPIAddr)
		if err != nil {
			return nil, fmt.Errorf("listening for the delivery API: %w", err)
		}
		op.DeliveryAPI, err = deliveryapi.New(deliveryapi.Options{
			Listener: ln, CertDir: cfg.DeliveryAPICertDir, Kubernetes: mgr.GetConfig(),
			Reader:   deliverylog.NewReader(store.JetStream()),
			Resender: op.Dispatcher, NotRegistered: delivery.ErrNotRegistered,
		})
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("setting up the delivery API: %w", err)
		}
		op.DeliveryAPIAddr = ln.Addr().String()
		if err := mgr.Add(op.DeliveryAPI); err != nil {
			return nil, err
		}
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("registry", op.ready); err != nil {
		return nil, err
	}
	ok = true
	return op, nil
}

// isLeader reports leadership from the manager's Elected channel; without
// leader election the channel is closed at start.
func isLeader(mgr ctrl.Manager) func() bool {
	elected := mgr.Elected()
	return func() bool {
		select {
		case <-elected:
			return true
		default:
			return false
		}
	}
}

// ready is nil once the registry is rebuilt and the store is connected.
func (o *Operator) ready(_ *http.Request) error { return o.Ready() }

// Ready is nil once the registry is rebuilt and the store is connected.
func (o *Operator) Ready() error {
	select {
	case <-o.Registry.Synced():
	default:
		return errors.New("registry not rebuilt yet")
	}
	return o.Store.Healthy()
}

// Close closes the store (and stops the embedded NATS server).
func (o *Operator) Close() { o.Store.Close() }
