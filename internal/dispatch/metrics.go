package dispatch

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatcher's Prometheus metrics. Labels never carry a URL
// or a secret: endpoints are named by namespace and WebhookConfig name.
type Metrics struct {
	Accepted   *prometheus.CounterVec
	Deliveries *prometheus.CounterVec
	Duration   *prometheus.HistogramVec
	Retries    *prometheus.CounterVec
	Refused    *prometheus.CounterVec
	QueueDepth *prometheus.GaugeVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wablast_webhook_events_accepted_total",
			Help: "Events accepted by the ingestion API and stored, by namespace and event type.",
		}, []string{"namespace", "event_type"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wablast_webhook_delivery_attempts_total",
			Help: "Delivery attempts by namespace, WebhookConfig name, event type and result (success, failure).",
		}, []string{"namespace", "name", "event_type", "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wablast_webhook_delivery_attempt_duration_seconds",
			Help:    "Duration of delivery attempts, from sending the request to the response headers or the error.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"namespace", "name"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wablast_webhook_delivery_retries_total",
			Help: "Failed attempts after which a retry was scheduled.",
		}, []string{"namespace", "name"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wablast_webhook_egress_refused_total",
			Help: "Attempts refused by the egress policy before connecting.",
		}, []string{"namespace", "name"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wablast_webhook_queue_depth",
			Help: "Deliveries waiting in the store, by stream (events not yet fanned out, deliveries pending).",
		}, []string{"stream"}),
	}
	m.Accepted = register(reg, m.Accepted)
	m.Deliveries = register(reg, m.Deliveries)
	m.Duration = register(reg, m.Duration)
	m.Retries = register(reg, m.Retries)
	m.Refused = register(reg, m.Refused)
	m.QueueDepth = register(reg, m.QueueDepth)
	return m
}

// register registers c, or returns the collector already registered under
// its name (a second manager in the same process, as in tests).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

func (m *Metrics) accepted(events []Event, results []EnqueueResult) {
	for i := range events {
		if !results[i].Duplicate {
			m.Accepted.WithLabelValues(events[i].Namespace, events[i].Type).Inc()
		}
	}
}

func (m *Metrics) attempt(ep *Endpoint, eventType string, r *attemptResult) {
	result := "failure"
	if r.succeeded() {
		result = "success"
	}
	m.Deliveries.WithLabelValues(ep.Namespace, ep.Name, eventType, result).Inc()
	m.Duration.WithLabelValues(ep.Namespace, ep.Name).Observe(r.duration.Seconds())
	if r.refused {
		m.Refused.WithLabelValues(ep.Namespace, ep.Name).Inc()
	}
}
