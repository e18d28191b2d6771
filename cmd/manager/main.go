// Command manager runs the WA Blast webhook operator: the WebhookConfig
// controller, the dispatcher and the ingestion API in one process.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/operator"
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
	flag.BoolVar(&leaderElect, "leader-elect", false, "Enable leader election: only the leader reconciles and writes status; every replica delivers.")
	flag.StringVar(&leaderElectNamespace, "leader-election-namespace", "", "The namespace of the leader election Lease; defaults to the pod's namespace.")
	flag.StringVar(&cfg.DataDir, "data-dir", "/var/lib/webhook-operator", "The embedded NATS JetStream file store directory.")
	flag.StringVar(&cfg.NATSURL, "nats-url", "", "The URL of an external NATS cluster with JetStream; empty runs an embedded server.")
	flag.IntVar(&cfg.NATSReplicas, "nats-replicas", 1, "The replication factor of streams and buckets on an external NATS cluster.")
	flag.Var(&allow, "egress-allow-cidrs", "Comma-separated CIDRs deliveries may reach even though the default egress policy refuses them (e.g. 127.0.0.0/8).")
	flag.Var(&deny, "egress-deny-cidrs", "Comma-separated CIDRs deliveries may never reach; wins over --egress-allow-cidrs.")
	flag.DurationVar(&cfg.StatusFlushInterval, "status-flush-interval", 5*time.Second, "How often delivery counters are written into status, at most once per resource.")
	flag.DurationVar(&cfg.FailedRetention, "failed-retention", 7*24*time.Hour, "How long deliveries that failed for good are kept for replay.")
	flag.DurationVar(&cfg.IdempotencyWindow, "idempotency-window", 24*time.Hour, "How long an event id posted by a producer is remembered: the same id posted again within it is accepted once and delivered once.")
	flag.StringVar(&cfg.IngestAddr, "ingest-bind-address", ":8082", "The address the ingestion API binds to.")
	flag.Int64Var(&cfg.MaxEventBytes, "max-event-bytes", 262144, "The size limit of one event posted to the ingestion API.")
	flag.DurationVar(&cfg.AuthCacheTTL, "ingest-auth-cache-ttl", 10*time.Second, "How long ingestion authentication and authorization decisions are cached.")
	var groupCommitDelay time.Duration
	flag.DurationVar(&groupCommitDelay, "group-commit-delay", delivery.DefaultGroupCommitDelay, "With the embedded NATS server: how long a write of deliveries to a busy endpoint waits for more to join it (a write after a single delivery never waits); 0 turns it off.")
	flag.Var(&watchNamespaces, "watch-namespaces", "Comma-separated namespaces the operator serves: it caches, reconciles and accepts events only there, and needs RBAC only there (plus TokenReview and SubjectAccessReview creation). Empty (the default) serves every namespace.")
	flag.IntVar(&cfg.MaxConcurrentReconciles, "max-concurrent-reconciles", 4, "How many WebhookConfigs are reconciled in parallel.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	cfg.GroupCommitDelay = groupCommitDelay
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
