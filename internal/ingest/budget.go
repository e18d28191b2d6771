package ingest

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"golang.org/x/sync/semaphore"
)

// errOverloaded is returned by a bodyReader whose body outgrows the room
// left in Options.MaxDecodingBytes.
var errOverloaded = errors.New("the request bodies being decoded take all the room")

// bodyBudget is one request's share of Options.MaxDecodingBytes.
type bodyBudget struct {
	sem  *semaphore.Weighted
	held int64
}

// reserve takes n more bytes, without waiting; false when they do not fit.
func (b *bodyBudget) reserve(n int64) bool {
	if n <= 0 {
		return true
	}
	if !b.sem.TryAcquire(n) {
		return false
	}
	b.held += n
	return true
}

// release gives back every byte held.
func (b *bodyBudget) release() {
	if b.held > 0 {
		b.sem.Release(b.held)
		b.held = 0
	}
}

// bodyReader reads a request body, reserving in its budget every byte read
// beyond what is reserved already; when the budget cannot grow, Read
// returns errOverloaded. A body may overshoot by at most one read buffer.
type bodyReader struct {
	io.ReadCloser
	budget bodyBudget
	read   int64
}

func (r *bodyReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.read += int64(n)
	if !r.budget.reserve(r.read - r.budget.held) {
		return n, errOverloaded
	}
	return n, err
}

// reserveBody reserves the request's body, up to limit bytes, in the
// decoding budget: all of its Content-Length at once when known (so a post
// that cannot fit is refused before anything is read), else as it is read.
// The caller releases the budget once the events are stored or refused.
func (s *Server) reserveBody(r *http.Request, limit int64) (*bodyBudget, *apiError) {
	if r.ContentLength > limit {
		return &bodyBudget{}, nil // refused with 413 before anything is read
	}
	// One allocation: the reader holds the budget.
	br := &bodyReader{ReadCloser: r.Body, budget: bodyBudget{sem: s.decoding}}
	if r.ContentLength > 0 && !br.budget.reserve(r.ContentLength) {
		return nil, s.overloaded()
	}
	r.Body = br
	return &br.budget, nil
}

// overloaded is the answer to a post refused for want of room in
// Options.MaxDecodingBytes.
func (s *Server) overloaded() *apiError {
	e := newError(http.StatusServiceUnavailable, CodeOverloaded, fmt.Sprintf(
		"the dispatcher is already reading as many bytes of posted events as it may hold at once (%d); nothing was read: retry after %d second",
		s.opts.MaxDecodingBytes, overloadRetryAfter))
	e.retryAfter = overloadRetryAfter
	return e
}
