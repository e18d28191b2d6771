package ingest

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wablast/webhook-operator/internal/store"
)

// Every answer to a post of events is counted by its status code, with no
// label that a caller chooses: posts into a hundred namespaces add no
// series. The codes the API answers with are there, at 0, before any
// request.
func TestAnswersAreCountedByStatusCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, func(o *Options) { o.Metrics = NewMetrics(reg) })
	m := ts.opts.Metrics
	if n := promtest.CollectAndCount(m.Requests); n != len(answeredCodes) {
		t.Fatalf("%d series before any request, want one per answered code (%d)", n, len(answeredCodes))
	}
	post := func(req request, want int) {
		t.Helper()
		if req.contentType == "" {
			req.contentType = "application/json"
		}
		if w := ts.do(t, req); w.Code != want {
			t.Fatalf("answered %d, want %d: %s", w.Code, want, w.Body)
		}
	}
	post(request{body: validEvent}, http.StatusAccepted)
	post(request{body: validEvent}, http.StatusAccepted)
	post(request{body: validEvent, auth: "-"}, http.StatusUnauthorized)
	post(request{body: validEvent, contentType: "text/plain"}, http.StatusUnsupportedMediaType)
	post(request{body: `{"type":"no.such.type","data":{}}`}, http.StatusUnprocessableEntity)
	for i := range 100 {
		post(request{body: validEvent, auth: "Bearer nobody", path: fmt.Sprintf("/v1/namespaces/ns-%d/events", i)}, http.StatusUnauthorized)
	}
	ts.enq.err = store.ErrUnavailable
	post(request{body: validEvent}, http.StatusServiceUnavailable)

	for code, want := range map[string]float64{"202": 2, "401": 101, "415": 1, "422": 1, "503": 1, "429": 0, "400": 0} {
		if got := promtest.ToFloat64(m.Requests.WithLabelValues(code)); got != want {
			t.Errorf("code %s counted %v times, want %v", code, got, want)
		}
	}
	if n := promtest.CollectAndCount(m.Requests); n != len(answeredCodes) {
		t.Errorf("%d series after posts into 100 namespaces, want %d", n, len(answeredCodes))
	}
}
