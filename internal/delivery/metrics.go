package delivery

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wablast/webhook-operator/internal/endpoint"
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

	acceptedBy labelCache[[2]string, prometheus.Counter]
	deliveries labelCache[[4]string, prometheus.Counter]
	duration   labelCache[[2]string, prometheus.Observer]
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
			m.acceptedBy.get([2]string{events[i].Namespace, events[i].Type}, func(l [2]string) prometheus.Counter {
				return m.Accepted.WithLabelValues(l[0], l[1])
			}).Inc()
		}
	}
}

func (m *Metrics) attempt(ep *endpoint.Endpoint, eventType string, r *attemptResult) {
	result := "failure"
	if r.succeeded() {
		result = "success"
	}
	m.deliveries.get([4]string{ep.Namespace, ep.Name, eventType, result}, func(l [4]string) prometheus.Counter {
		return m.Deliveries.WithLabelValues(l[0], l[1], l[2], l[3])
	}).Inc()
	m.duration.get([2]string{ep.Namespace, ep.Name}, func(l [2]string) prometheus.Observer {
		return m.Duration.WithLabelValues(l[0], l[1])
	}).Observe(r.duration.Seconds())
	if r.refused {
		m.Refused.WithLabelValues(ep.Namespace, ep.Name).Inc()
	}
}

// labelCache keeps the metrics of label sets already used: a vector's
// WithLabelValues validates and hashes every label on every call, and the
// hot ones are called for every event and every attempt. Nothing is ever
// deleted from the vectors, so a kept metric stays the one exported.
type labelCache[K comparable, M any] struct {
	mu sync.RWMutex
	m  map[K]M
}

func (c *labelCache[K, M]) get(labels K, metric func(K) M) M {
	c.mu.RLock()
	v, ok := c.m[labels]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = metric(labels)
	c.mu.Lock()
	if c.m == nil {
		c.m = map[K]M{}
	}
	c.m[labels] = v
	c.mu.Unlock()
	return v
}
