package delivery

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"

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
	// Latency is the time from an event's acceptance to its first
	// successful delivery, per endpoint.
	Latency *prometheus.HistogramVec
	// Failed counts the deliveries that failed for good (attempts or age
	// used up, or 410 Gone), per endpoint and event type.
	Failed *prometheus.CounterVec
	// Pending and Lag are the deliveries not finished yet and the age of
	// the oldest one waiting in the store, per endpoint (backlog.go).
	Pending *prometheus.GaugeVec
	Lag     *prometheus.GaugeVec

	acceptedBy labelCache[[2]string, prometheus.Counter]
	deliveries labelCache[[4]string, prometheus.Counter]
	duration   labelCache[[2]string, prometheus.Observer]
	latency    labelCache[[2]string, prometheus.Observer]
	failed     labelCache[[3]string, prometheus.Counter]

	// backlogMu guards backlogKeys, the endpoints whose Pending and Lag
	// were last set (recordBacklog removes those of endpoints gone since).
	backlogMu   sync.Mutex
	backlogKeys map[types.NamespacedName]struct{}
}

// latencyBuckets span a receiver that answers at once (10 ms) to deliveries
// that succeed after hours of retries (maxAgeSeconds defaults to 3 days).
var latencyBuckets = []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400}

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
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wablast_webhook_end_to_end_latency_seconds",
			Help:    "Time from an event's acceptance by the ingestion API to its first successful delivery to a WebhookConfig's endpoint.",
			Buckets: latencyBuckets,
		}, []string{"namespace", "name"}),
		Failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wablast_webhook_events_failed_total",
			Help: "Deliveries given up for good (maxAttempts or maxAgeSeconds used up, or 410 Gone), kept for replay.",
		}, []string{"namespace", "name", "event_type"}),
		Pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wablast_webhook_pending_deliveries",
			Help: "Deliveries to a WebhookConfig's endpoint stored and not finished yet: waiting for their first attempt, in flight, or waiting for a retry.",
		}, []string{"namespace", "name"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wablast_webhook_delivery_lag_seconds",
			Help: "Age, since its event was accepted, of the oldest delivery waiting in the store for an attempt to a WebhookConfig's endpoint; 0 when none waits.",
		}, []string{"namespace", "name"}),
	}
	m.Accepted = register(reg, m.Accepted)
	m.Deliveries = register(reg, m.Deliveries)
	m.Duration = register(reg, m.Duration)
	m.Retries = register(reg, m.Retries)
	m.Refused = register(reg, m.Refused)
	m.QueueDepth = register(reg, m.QueueDepth)
	m.Latency = register(reg, m.Latency)
	m.Failed = register(reg, m.Failed)
	m.Pending = register(reg, m.Pending)
	m.Lag = register(reg, m.Lag)
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
		// The first attempt of an endpoint and event type also makes their
		// failed-for-good series, at 0 (once: only on a cache miss): an
		// alert's increase() counts a first failure only from a sample
		// before it.
		m.failed.get([3]string{l[0], l[1], l[2]}, func(l [3]string) prometheus.Counter {
			return m.Failed.WithLabelValues(l[0], l[1], l[2])
		})
		return m.Deliveries.WithLabelValues(l[0], l[1], l[2], l[3])
	}).Inc()
	m.duration.get([2]string{ep.Namespace, ep.Name}, func(l [2]string) prometheus.Observer {
		return m.Duration.WithLabelValues(l[0], l[1])
	}).Observe(r.duration.Seconds())
	if r.refused {
		m.Refused.WithLabelValues(ep.Namespace, ep.Name).Inc()
	}
}

// delivered records the first successful delivery of an event accepted
// after (the delivery's) latency.
func (m *Metrics) delivered(ep *endpoint.Endpoint, latency time.Duration) {
	m.latency.get([2]string{ep.Namespace, ep.Name}, func(l [2]string) prometheus.Observer {
		return m.Latency.WithLabelValues(l[0], l[1])
	}).Observe(latency.Seconds())
}

// failedForGood records a delivery given up for good.
func (m *Metrics) failedForGood(ep *endpoint.Endpoint, eventType string) {
	m.failed.get([3]string{ep.Namespace, ep.Name, eventType}, func(l [3]string) prometheus.Counter {
		return m.Failed.WithLabelValues(l[0], l[1], l[2])
	}).Inc()
}

// forget removes every series of the endpoint key, and the cached metrics
// that would bring them back: a deleted WebhookConfig leaves nothing behind.
func (m *Metrics) forget(key types.NamespacedName) {
	labels := prometheus.Labels{"namespace": key.Namespace, "name": key.Name}
	// The series first, then the cache: a metric cached in between is
	// dropped with it. (An attempt still running may cache one afterwards;
	// the dispatcher forgets the endpoint again once its worker stopped.)
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.Deliveries, m.Duration, m.Retries, m.Refused, m.Latency, m.Failed, m.Pending, m.Lag,
	} {
		v.DeletePartialMatch(labels)
	}
	m.deliveries.drop(func(l [4]string) bool { return l[0] == key.Namespace && l[1] == key.Name })
	m.duration.drop(func(l [2]string) bool { return l[0] == key.Namespace && l[1] == key.Name })
	m.latency.drop(func(l [2]string) bool { return l[0] == key.Namespace && l[1] == key.Name })
	m.failed.drop(func(l [3]string) bool { return l[0] == key.Namespace && l[1] == key.Name })
	// key stays in backlogKeys: should a backlog round that started before
	// the deletion set its series again, the next round removes them.
}

// labelCache keeps the metrics of label sets already used: a vector's
// WithLabelValues validates and hashes every label on every call, and the
// hot ones are called for every event and every attempt. A series is
// deleted from its vector only together with its cache entry (forget), so a
// kept metric stays the one exported.
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

// drop forgets the metrics of the label sets match selects.
func (c *labelCache[K, M]) drop(match func(K) bool) {
	c.mu.Lock()
	for k := range c.m {
		if match(k) {
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}
