package ingest

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/delivery"
)

// acceptAll is an Enqueuer that stores nothing and answers at once.
type acceptAll struct{}

func (acceptAll) Enqueue(_ context.Context, events []delivery.Event) ([]delivery.EnqueueResult, error) {
	results := make([]delivery.EnqueueResult, len(events))
	for i := range events {
		results[i] = delivery.EnqueueResult{ID: events[i].ID, Subscribers: 1}
	}
	return results, nil
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkHandleEvent is the ingestion API's handler for one posted event,
// from routing to the 202, with an Enqueuer that stores nothing: the cost
// the API adds to the store's and the HTTP server's.
func BenchmarkHandleEvent(b *testing.B) {
	s, err := New(Options{
		Enqueuer: acceptAll{},
		Auth: AuthenticatorFunc(func(_ context.Context, token, _ string) error {
			if token != testToken {
				return ErrUnauthenticated
			}
			return nil
		}),
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	body := []byte(`{"type":"message.sent","timestamp":"2026-11-28T10:15:02.123Z","data":{"messageId":"wamid.HBgLNjI4MTIzNDU2Nzg5FQIAERgSMEQ1RjM2","sessionId":"session-01","to":"+6281234567890","campaignId":"cmp_2026_11_black_friday","text":"Hello Budi, your order #1234 has shipped & will arrive tomorrow."}}`)
	r, err := http.NewRequest(http.MethodPost, "/v1/namespaces/wablast/events", nil)
	if err != nil {
		b.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+testToken)
	r.Header.Set("Content-Type", "application/json")
	r.ContentLength = int64(len(body))
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		r.Body = readCloser{bytes.NewReader(body)}
		clear(w.h)
		h.ServeHTTP(w, r)
		if w.code != http.StatusAccepted {
			b.Fatalf("status %d", w.code)
		}
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
