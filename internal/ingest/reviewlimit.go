package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/utils/clock"
)

// The defaults of the limits on TokenReviews (KubeAuthOptions). A review is
// a TokenReview and, for a valid token, a SubjectAccessReview: two API
// requests.
const (
	// DefaultMaxConcurrentReviews is how many reviews may run at once.
	DefaultMaxConcurrentReviews = 8
	// DefaultReviewRate and DefaultReviewBurst are the token bucket of all
	// reviews: reviews a second, and how many may be made at once after a
	// quiet period.
	DefaultReviewRate  = 20
	DefaultReviewBurst = 40
	// DefaultClientReviewRate and DefaultClientReviewBurst are the token
	// bucket of each client address.
	DefaultClientReviewRate  = 2
	DefaultClientReviewBurst = 10

	// maxClientBuckets caps the number of client addresses tracked; the
	// least recently seen go first, and the overall bucket still holds.
	maxClientBuckets = 10000
	// clientBucketIdle is how long the bucket of a client that makes no
	// review is kept (a full bucket is as good as a new one long before).
	clientBucketIdle = 10 * time.Minute
)

// ErrTooManyReviews is wrapped by the error of an authorization that would
// have needed a TokenReview over the limits: the API answers 429 with
// Retry-After.
var ErrTooManyReviews = errors.New("too many authentication attempts")

// RateLimitError is an authorization refused by the limits on TokenReviews.
// It wraps ErrTooManyReviews.
type RateLimitError struct {
	// RetryAfter is when a retry may succeed.
	RetryAfter time.Duration
	message    string
}

func (e *RateLimitError) Error() string { return e.message }

// Unwrap returns ErrTooManyReviews.
func (e *RateLimitError) Unwrap() error { return ErrTooManyReviews }

// retryAfterSeconds is d rounded up to whole seconds, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// clientAddrKey is the context key of the client's address.
type clientAddrKey struct{}

// withClientAddr returns ctx carrying the client address of remoteAddr
// (net/http's "host:port" form).
func withClientAddr(ctx context.Context, remoteAddr string) context.Context {
	return context.WithValue(ctx, clientAddrKey{}, remoteAddr)
}

// clientKey returns the key of the client's token bucket: its IP address,
// or for IPv6 its /64 network (one machine commonly holds a whole /64);
// "" when ctx carries none.
func clientKey(ctx context.Context) string {
	remote, _ := ctx.Value(clientAddrKey{}).(string)
	if remote == "" {
		return ""
	}
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap()
	if addr.Is6() {
		prefix, _ := addr.WithZone("").Prefix(64)
		return prefix.String()
	}
	return addr.String()
}

// reviewLimiter bounds the TokenReviews that unknown tokens cause: a token
// bucket per client address, one for all of them, and a number of reviews
// running at once.
type reviewLimiter struct {
	clock clock.PassiveClock
	// slots holds one value per review running; nil: no limit.
	slots chan struct{}
	// all is the overall bucket.
	all *rate.Limiter
	// clientRate and clientBurst make each client's bucket.
	clientRate  rate.Limit
	clientBurst int

	mu      sync.Mutex
	clients *cache.LRUExpireCache // client key -> *rate.Limiter
}

// limit turns a rate option into a rate.Limit: def when 0, no limit when
// negative.
func limit(r float64, def float64) rate.Limit {
	switch {
	case r < 0:
		return rate.Inf
	case r == 0:
		return rate.Limit(def)
	default:
		return rate.Limit(r)
	}
}

func newReviewLimiter(opts KubeAuthOptions, clk clock.PassiveClock) *reviewLimiter {
	l := &reviewLimiter{
		clock:       clk,
		all:         rate.NewLimiter(limit(opts.ReviewRate, DefaultReviewRate), cmpOr(opts.ReviewBurst, DefaultReviewBurst)),
		clientRate:  limit(opts.ClientReviewRate, DefaultClientReviewRate),
		clientBurst: cmpOr(opts.ClientReviewBurst, DefaultClientReviewBurst),
		clients:     cache.NewLRUExpireCacheWithClock(maxClientBuckets, clk),
	}
	switch n := opts.MaxConcurrentReviews; {
	case n == 0:
		l.slots = make(chan struct{}, DefaultMaxConcurrentReviews)
	case n > 0:
		l.slots = make(chan struct{}, n)
	}
	return l
}

// cmpOr is v, or def when v <= 0.
func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// acquire admits one review for the client of ctx, or returns a
// *RateLimitError. On success, call release when the review is done.
func (l *reviewLimiter) acquire(ctx context.Context) (release func(), err error) {
	now := l.clock.Now()
	client := clientKey(ctx)
	var (
		clientRes *rate.Reservation
		wait      time.Duration
		reason    string
	)
	if l.clientRate != rate.Inf {
		clientRes = l.clientBucket(client).ReserveN(now, 1)
		if d := clientRes.DelayFrom(now); d > 0 {
			clientRes.CancelAt(now)
			wait, reason = d, "from this client address"
		}
	}
	if reason == "" {
		if r := l.all.ReserveN(now, 1); r.DelayFrom(now) > 0 {
			wait = r.DelayFrom(now)
			r.CancelAt(now)
			if clientRes != nil {
				clientRes.CancelAt(now)
			}
			reason = "to this dispatcher"
		}
	}
	if reason == "" && l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		default:
			if clientRes != nil {
				clientRes.CancelAt(now)
			}
			wait, reason = time.Second, "being checked at once"
		}
	}
	if reason != "" {
		return nil, &RateLimitError{RetryAfter: wait, message: fmt.Sprintf(
			"%s: too many tokens that are not yet known %s; retry after %d seconds",
			ErrTooManyReviews, reason, retryAfterSeconds(wait))}
	}
	if l.slots == nil {
		return func() {}, nil
	}
	return func() { <-l.slots }, nil
}

// clientBucket returns the token bucket of a client key.
func (l *reviewLimiter) clientBucket(client string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.clients.Get(client); ok {
		return v.(*rate.Limiter)
	}
	b := rate.NewLimiter(l.clientRate, l.clientBurst)
	l.clients.Add(client, b, clientBucketIdle)
	return b
}
