package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wablast/webhook-operator/internal/signing"
)

// receiver is a loopback webhook receiver: it verifies every request's
// Standard Webhooks signature with signing.Verifier and records, per path and
// webhook-id, when the first copy arrived. Requests that do not verify are
// answered 400 and counted, never recorded.
type receiver struct {
	URL      string
	srv      *http.Server
	verifier signing.Verifier

	mu      sync.Mutex
	first   map[string]time.Time // "<path> <webhook-id>" -> first receipt
	dups    int64
	bad     int64
	want    int
	reached chan struct{}
	lastAt  time.Time
}

func newReceiver(keys [][]byte) (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{
		URL:      "http://" + ln.Addr().String(),
		verifier: signing.Verifier{Keys: keys},
		first:    map[string]time.Time{},
		reached:  make(chan struct{}),
	}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if err := r.verifier.Verify(req.Header, body); err != nil {
		r.mu.Lock()
		r.bad++
		r.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	now := time.Now()
	key := req.URL.Path + " " + req.Header.Get(signing.HeaderID)
	r.mu.Lock()
	if _, seen := r.first[key]; seen {
		r.dups++
	} else {
		r.first[key] = now
		if len(r.first) == r.want {
			r.lastAt = now
			close(r.reached)
		}
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// reset forgets everything received and waits for want unique deliveries.
func (r *receiver) reset(want int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.first = make(map[string]time.Time, want)
	r.dups, r.bad = 0, 0
	r.want = want
	r.reached = make(chan struct{})
	r.lastAt = time.Time{}
}

// wait returns the time the want-th unique delivery arrived, or an error
// when it did not within timeout.
func (r *receiver) wait(ctx context.Context, timeout time.Duration) (time.Time, error) {
	r.mu.Lock()
	ch := r.reached
	r.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.lastAt, nil
	case <-t.C:
		return time.Time{}, errors.New("timed out waiting for deliveries")
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// counts returns unique deliveries, duplicates and requests that failed verification.
func (r *receiver) counts() (unique int, dups, bad int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.first), r.dups, r.bad
}

// times returns a copy of the first-receipt times by "<path> <webhook-id>".
func (r *receiver) times() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Time, len(r.first))
	for k, v := range r.first {
		out[k] = v
	}
	return out
}

func (r *receiver) close() { _ = r.srv.Close() }
