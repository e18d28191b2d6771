package ingest

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ingestion API's Prometheus metrics.
type Metrics struct {
	// Requests counts the answers to POST /v1/namespaces/{namespace}/events
	// by HTTP status code. It has no namespace label: the path's namespace
	// is the caller's to choose, authorized or not, and a label must not
	// grow with what callers send.
	Requests *prometheus.CounterVec

	// byCode holds the counters of the codes the API answers with, made at
	// start: a request looks its counter up in an array, and every code's
	// series exists from the start (rate() and alerts see a 503 from the
	// first one).
	byCode [600]prometheus.Counter
}

// answeredCodes are the status codes POST .../events answers with.
var answeredCodes = []int{
	http.StatusAccepted, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
	http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity,
	http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable,
}

// NewMetrics creates the metrics and registers them with reg (or finds
// them registered by another server in the same process, as in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wablast_webhook_ingest_requests_total",
		Help: "Requests to post events to the ingestion API, by HTTP status code of the answer.",
	}, []string{"code"})}
	if err := reg.Register(m.Requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		existing, ok := m.Requests, false
		if errors.As(err, &are) {
			existing, ok = are.ExistingCollector.(*prometheus.CounterVec)
		}
		if !ok {
			panic(err)
		}
		m.Requests = existing
	}
	for _, code := range answeredCodes {
		m.byCode[code] = m.Requests.WithLabelValues(strconv.Itoa(code))
	}
	return m
}

// answered counts an answer with status code.
func (m *Metrics) answered(code int) {
	if m == nil {
		return
	}
	if code >= 0 && code < len(m.byCode) && m.byCode[code] != nil {
		m.byCode[code].Inc()
		return
	}
	m.Requests.WithLabelValues(strconv.Itoa(code)).Inc()
}
