package status

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The status writes, counted by Apply for every field manager. They live
// in controller-runtime's registry, served on the manager's metrics
// address, as its own reconcile metrics do.
var (
	writesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wablast_webhook_status_writes_total",
		Help: "Status applies sent to the API server, by field manager (controller, dispatcher, test, replay).",
	}, []string{"field_manager"})
	writeErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wablast_webhook_status_write_errors_total",
		Help: "Status applies the API server did not take, by field manager; a resource deleted meanwhile counts too.",
	}, []string{"field_manager"})
)

// fieldManagers are the field managers Apply is called with.
var fieldManagers = []string{ControllerFieldManager, DeliveryFieldManager, TestFieldManager, ReplayFieldManager}

func init() {
	metrics.Registry.MustRegister(writesTotal, writeErrorsTotal)
	// Every series exists from the start, at 0.
	for _, m := range fieldManagers {
		writesTotal.WithLabelValues(m)
		writeErrorsTotal.WithLabelValues(m)
	}
}

// countWrite counts one apply by manager and whether it failed.
func countWrite(manager string, err error) {
	writesTotal.WithLabelValues(manager).Inc()
	if err != nil {
		writeErrorsTotal.WithLabelValues(manager).Inc()
	}
}
