// Command manager runs the WA Blast webhook operator: the WebhookConfig
// controller, the dispatcher and the ingestion API in one process.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/ingest"
	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// commaList is a comma-separated flag value (CIDRs, namespaces).
type commaList []string

func (c *commaList) String() string { return strings.Join(*c, ",") }
func (c *commaList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*c = append(*c, s)
		}
	}
	return nil
}

func run() error {
	var (
		metricsAddr          string
		probeAddr            string
		pprofAddr            string
		leaderElect          bool
		leaderElectNamespace string
		cfg                  operator.Config
		allow, deny          commaList
		watchNamespaces      commaList
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "The address the metrics endpoint binds to; \"0\" disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the health and readiness probes bind to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "The address Go's pprof handlers (/debug/pprof/) bind to, for finding where memory and CPU go; \"0\" (the default) disables them. Bind it to loopback only: profiles show the process's internals.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Enable leader election: only the leader reconciles, writes status and delivers to PerKey (ordered) endpoints; every replica delivers to the others. Required with several replicas.")
	flag.StringVar(&leaderElectNamespace, "leader-election-namespace", "", "The namespace of the leader election Lease; defaults to the pod's namespace.")
	flag.StringVar(&cfg.DataDir, "data-dir", "/var/lib/webhook-operator", "The embedded NATS JetStream file store directory.")
	flag.StringVar(&cfg.NATSURL, "nats-url", "", "The URL of an external NATS cluster with JetStream; empty runs an embedded server.")
	flag.IntVar(&cfg.NATSReplicas, "nats-replicas", 1, "The replication factor of streams and buckets on an external NATS cluster.")
	flag.Var(&allow, "egress-allow-cidrs", "Comma-separated CIDRs deliveries may reach even though the default egress policy refuses them (it refuses everything but the public internet: metadata, loopback, link-local, private and CGNAT ranges), e.g. an in-cluster receiver's 10.96.12.34/32. Anyone who may create a WebhookConfig can reach what is allowed here.")
	flag.Var(&deny, "egress-deny-cidrs", "Comma-separated CIDRs deliveries may never reach; wins over --egress-allow-cidrs.")
	flag.DurationVar(&cfg.StatusFlushInterval, "status-flush-interval", 5*time.Second, "How often delivery counters are written into status, at most once per resource.")
	flag.DurationVar(&cfg.FailedRetention, "failed-retention", 7*24*time.Hour, "How long deliveries that failed for good are kept for replay.")
	flag.DurationVar(&cfg.IdempotencyWindow, "idempotency-window", 24*time.Hour, "How long an event id posted by a producer is remembered: the same id posted again within it is accepted once and delivered once.")
	flag.StringVar(&cfg.IngestAddr, "ingest-bind-address", ":8082", "The address the ingestion API binds to.")
	flag.Int64Var(&cfg.MaxEventBytes, "max-event-bytes", 262144, "The size limit of one event posted to the ingestion API.")
	flag.Int64Var(&cfg.MaxBatchBytes, "max-batch-bytes", ingest.DefaultMaxBatchBytes, "The size limit of an NDJSON batch body posted to the ingestion API; over it the answer is 413.")
	flag.Int64Var(&cfg.MaxDecodingBytes, "max-decoding-bytes", ingest.DefaultMaxDecodingBytes, "The request body bytes the ingestion API holds at once (read, decoded or waiting to be stored); a post that does not fit is answered 503 with Retry-After. At least --max-batch-bytes. Decoding takes a few times the body's size, so keep it well under the memory limit.")
	flag.DurationVar(&cfg.AuthCacheTTL, "ingest-auth-cache-ttl", 10*time.Second, "How long ingestion authentication and authorization decisions are cached.")
	var storeMaxBytes, storeSync string
	flag.StringVar(&storeMaxBytes, "store-max-bytes", "0", "What the embedded store may keep on disk (JetStream, the idempotency index and the retry queue), as bytes or a quantity such as 800Mi: from 90% of it new events are answered 503 and /readyz fails until deliveries bring it under 80%. 0: 85% of the file system holding --data-dir.")
	flag.StringVar(&storeSync, "store-sync", "1s", "How the embedded store makes acknowledged events durable against a machine crash: \"always\" (a flush to disk before every acknowledgement) or an interval (a power loss can lose what was acknowledged within it). A process crash loses nothing either way.")
	flag.IntVar(&cfg.IngestAuth.MaxConcurrentReviews, "ingest-max-concurrent-reviews", ingest.DefaultMaxConcurrentReviews, "How many TokenReviews of tokens not yet known may run at once; more get 429. Negative: no limit.")
	flag.Float64Var(&cfg.IngestAuth.ReviewRate, "ingest-review-rate", ingest.DefaultReviewRate, "TokenReviews a second of tokens not yet known, from all clients (a token bucket); more get 429 with Retry-After. Negative: no limit.")
	flag.IntVar(&cfg.IngestAuth.ReviewBurst, "ingest-review-burst", ingest.DefaultReviewBurst, "The burst of --ingest-review-rate.")
	flag.Float64Var(&cfg.IngestAuth.ClientReviewRate, "ingest-review-rate-per-client", ingest.DefaultClientReviewRate, "TokenReviews a second of tokens not yet known, from one client address (an IPv6 /64); more get 429 with Retry-After. Negative: no limit.")
	flag.IntVar(&cfg.IngestAuth.ClientReviewBurst, "ingest-review-burst-per-client", ingest.DefaultClientReviewBurst, "The burst of --ingest-review-rate-per-client.")
	flag.BoolVar(&cfg.IngestAuth.AcceptAPIServerTokens, "ingest-accept-apiserver-tokens", false, "Also accept ServiceAccount tokens issued for the API server's own audience, not only those for the audience \""+ingest.TokenAudience+"\" (compatibility: such a token is a credential for the whole API server).")
	var reviewAPIQPS float64
	flag.Float64Var(&reviewAPIQPS, "ingest-review-api-qps", operator.DefaultReviewAPIQPS, "The client-side rate limit (requests a second) of the Kubernetes client that sends TokenReviews and SubjectAccessReviews, apart from the controller's.")
	flag.IntVar(&cfg.ReviewAPIBurst, "ingest-review-api-burst", operator.DefaultReviewAPIBurst, "The burst of --ingest-review-api-qps.")
	var groupCommitDelay time.Duration
	flag.DurationVar(&groupCommitDelay, "group-commit-delay", delivery.DefaultGroupCommitDelay, "With the embedded NATS server: how long a write of deliveries to a busy endpoint waits for more to join it (a write after a single delivery never waits); 0 turns it off.")
	flag.Var(&watchNamespaces, "watch-namespaces", "Comma-separated namespaces the operator serves: it caches, reconciles and accepts events only there, and needs RBAC only there (plus TokenReview and SubjectAccessReview creation). Empty (the default) serves every namespace.")
	flag.IntVar(&cfg.MaxConcurrentReconciles, "max-concurrent-reconciles", 4, "How many WebhookConfigs are reconciled in parallel.")
	flag.DurationVar(&cfg.DeliveryLogRetention, "delivery-log-retention", store.DefaultDeliveryLogRetention, "How long the delivery log (every delivery and attempt, served as delivery.wablast.io webhookdeliveries) keeps a record; 0 turns the log and its API off.")
	var logMaxBytes string
	flag.StringVar(&logMaxBytes, "delivery-log-max-bytes", "1Gi", "The delivery log's size cap, as bytes or a quantity; the oldest records go first. Held to a quarter of --store-max-bytes.")
	flag.Int64Var(&cfg.DeliveryLogMaxRecords, "delivery-log-max-records", store.DefaultDeliveryLogMaxRecords, "The delivery log's cap on records (a delivery is usually two: stored, then its attempt), the oldest going first. The store keeps an index entry a delivery in memory (about 500 bytes of heap in a soak), so this bounds the log's memory whatever the bodies' size; negative: no cap.")
	flag.IntVar(&cfg.DeliveryLogBodyBytes, "delivery-log-max-body-bytes", store.DefaultDeliveryLogBodyBytes, "Bodies up to this size are kept in the delivery log; a larger one is kept as its size and SHA-256.")
	flag.StringVar(&cfg.DeliveryAPIAddr, "delivery-api-bind-address", ":8443", "The address the delivery.wablast.io aggregated API (HTTPS) binds to; \"0\" disables it.")
	flag.StringVar(&cfg.DeliveryAPICertDir, "delivery-api-cert-dir", "", "A directory with the delivery API's serving certificate, tls.crt and tls.key; empty: a self-signed certificate (the APIService must then skip verification).")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	cfg.GroupCommitDelay = groupCommitDelay
	q, err := resource.ParseQuantity(storeMaxBytes)
	if err != nil {
		return fmt.Errorf("invalid --store-max-bytes %q: %w", storeMaxBytes, err)
	}
	cfg.StoreMaxBytes = q.Value()
	lq, err := resource.ParseQuantity(logMaxBytes)
	if err != nil {
		return fmt.Errorf("invalid --delivery-log-max-bytes %q: %w", logMaxBytes, err)
	}
	cfg.DeliveryLogMaxBytes = lq.Value()
	if cfg.DeliveryAPIAddr == "0" {
		cfg.DeliveryAPIAddr = ""
	}
	if cfg.StoreSync, err = store.ParseSync(storeSync); err != nil {
		return err
	}
	cfg.ReviewAPIQPS = float32(reviewAPIQPS)
	if groupCommitDelay <= 0 {
		cfg.GroupCommitDelay = -1 // off
	}
	cfg.EgressAllowCIDRs, cfg.EgressDenyCIDRs = allow, deny
	cfg.WatchNamespaces = watchNamespaces
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	setupLog := ctrl.Log.WithName("setup")
	if soft := setMemoryLimit(); soft > 0 {
		setupLog.Info("Set the Go runtime's soft memory limit to 85% of the container's memory limit", "bytes", soft)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(webhooksv1alpha1.AddToScheme(scheme))

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                  scheme,
		Cache:                   operator.CacheOptions(cfg.WatchNamespaces),
		Client:                  operator.ClientOptions(),
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "webhook-operator.webhooks.wablast.io",
		LeaderElectionNamespace: leaderElectNamespace,
		// Leave the lease on shutdown so a new leader takes over at once.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	ctx := ctrl.SetupSignalHandler()
	op, err := operator.Setup(ctx, mgr, cfg)
	if err != nil {
		return err
	}
	defer op.Close()

	setupLog.Info("Starting manager", "version", operator.Version, "embeddedNATS", cfg.NATSURL == "", "watchNamespaces", cfg.WatchNamespaces)
	return mgr.Start(ctx)
}
