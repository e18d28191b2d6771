package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// receiver is a loopback webhook receiver. Every request goes through
// testutil.Receiver.Record: its Standard Webhooks signature is verified with
// the official library and its body kept by webhook-id (a later copy must be
// the same bytes). The receiver records, per path and webhook-id, when the
// first copy arrived. Requests that do not verify are answered 400, counted,
// never recorded, and end the wait at once. What the bodies hold is compared
// with what was posted (Ledger) only by check, after a timed window, so the
// comparison costs the measurement nothing; the baseline's receiver is the
// same, so both sides of a ratio do the same work per request.
type receiver struct {
	URL string
	// Ledger is what the pass posted, filled in by the pass (the ids of
	// events posted without one come from the 202 answers, recorded after
	// the timed window).
	Ledger *testutil.Ledger
	oracle *testutil.Receiver
	srv    *http.Server

	mu      sync.Mutex
	first   map[string]time.Time // "<path> <webhook-id>" -> first receipt
	dups    int64
	bad     int64
	badErr  error
	want    int
	reached chan struct{}
	failed  chan struct{} // closed at the first request that did not verify
	lastAt  time.Time
}

// newReceiver starts a receiver for endpoints signed with secret (as
// signing.GenerateSecret writes it).
func newReceiver(secret string) (*receiver, error) {
	ledger := testutil.NewLedger()
	oracle, err := testutil.NewReceiver(secret, ledger)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{
		URL:     "http://" + ln.Addr().String(),
		Ledger:  ledger,
		oracle:  oracle,
		first:   map[string]time.Time{},
		reached: make(chan struct{}),
		failed:  make(chan struct{}),
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
	if _, err := r.oracle.Record(req.Header, req.URL.Path, body); err != nil {
		r.mu.Lock()
		r.bad++
		if r.badErr == nil {
			r.badErr = fmt.Errorf("%s %s: %w", req.URL.Path, req.Header.Get(signing.HeaderID), err)
			close(r.failed)
		}
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
// The Ledger is kept: a late copy of an earlier event is still checked.
func (r *receiver) reset(want int) {
	r.oracle.Reset()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.first = make(map[string]time.Time, want)
	r.dups, r.bad, r.badErr = 0, 0, nil
	r.want = want
	r.reached = make(chan struct{})
	r.failed = make(chan struct{})
	r.lastAt = time.Time{}
}

// wait returns the time the want-th unique delivery arrived, or an error
// when it did not within timeout or a request failed verification.
func (r *receiver) wait(ctx context.Context, timeout time.Duration) (time.Time, error) {
	r.mu.Lock()
	ch, failed := r.reached, r.failed
	r.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.lastAt, nil
	case <-failed:
		r.mu.Lock()
		defer r.mu.Unlock()
		return time.Time{}, &contentError{err: fmt.Errorf("a delivery failed the official Standard Webhooks library's verification: %w", r.badErr)}
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
	return maps.Clone(r.first)
}

// check compares every body received since the last reset with what was
// posted (type, data as a JSON value, timestamp), requires every id in want
// to have arrived (nil: only what arrived is checked), and no request to
// have failed verification. It is not timed: call it after the window. The
// error names pass.
func (r *receiver) check(pass string, want []string) error {
	var err error
	if want == nil {
		err = r.oracle.Check()
	} else {
		err = r.oracle.CheckAll(want)
	}
	if err != nil {
		return &contentError{pass: pass, err: err}
	}
	return nil
}

func (r *receiver) close() { _ = r.srv.Close() }

// contentError is a pass whose deliveries were not what was posted: other
// content, an event missing, a signature that did not verify. It fails the
// run instead of a figure being reported.
type contentError struct {
	pass string
	err  error
}

func (e *contentError) Error() string {
	if e.pass == "" {
		return "content check failed: " + e.err.Error()
	}
	return "content check failed in pass " + e.pass + ": " + e.err.Error()
}

func (e *contentError) Unwrap() error { return e.err }
