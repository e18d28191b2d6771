// Command manager runs the WA Blast webhook operator: the WebhookConfig
// controller and the dispatcher in one process.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/controller"
	"github.com/wablast/webhook-operator/internal/dispatch"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr          string
		probeAddr            string
		leaderElect          bool
		leaderElectNamespace string
		maxConcurrent        int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "The address the metrics endpoint binds to; \"0\" disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "The address the health and readiness probes bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Enable leader election, so that only one manager writes status at a time.")
	flag.StringVar(&leaderElectNamespace, "leader-election-namespace", "", "The namespace of the leader election Lease; defaults to the pod's namespace.")
	flag.IntVar(&maxConcurrent, "max-concurrent-reconciles", 4, "How many WebhookConfigs are reconciled in parallel.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(webhooksv1alpha1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "webhook-operator.webhooks.wablast.io",
		LeaderElectionNamespace: leaderElectNamespace,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}

	ctx := ctrl.SetupSignalHandler()
	registry := dispatch.NewMemoryRegistry()
	if err := (&controller.WebhookConfigReconciler{
		Client:   mgr.GetClient(),
		Registry: registry,
		Recorder: mgr.GetEventRecorder("webhook-operator"),
	}).SetupWithManager(ctx, mgr, ctrlcontroller.Options{MaxConcurrentReconciles: maxConcurrent}); err != nil {
		return fmt.Errorf("setting up the WebhookConfig controller: %w", err)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("registry", registrySynced(registry)); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}

	setupLog.Info("Starting manager")
	return mgr.Start(ctx)
}

// registrySynced is ready once the registry has been rebuilt from the API server.
func registrySynced(r dispatch.Registry) healthz.Checker {
	return func(_ *http.Request) error {
		select {
		case <-r.Synced():
			return nil
		default:
			return errors.New("registry not rebuilt yet")
		}
	}
}
