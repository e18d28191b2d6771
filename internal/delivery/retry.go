package delivery

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
)

// Backoff returns the delay before attempt number attempt+1, after attempt
// failed attempts. The base delay is initial * 2^(attempt-1), capped at
// maxDelay; the result uses "equal jitter": half the base plus rnd() times
// the other half, so it lies in [base/2, base] and never exceeds maxDelay. There is no
// floor: with initial below one second the delay may be shorter than that.
//
// rnd returns a value in [0, 1); values outside that range are clamped and a
// nil rnd uses math/rand/v2. An attempt below 1 is treated as 1. The result
// is never negative: a non-positive initial or maxDelay gives 0. The
// doubling saturates at maxDelay, so any attempt count is safe.
func Backoff(initial, maxDelay time.Duration, attempt int, rnd func() float64) time.Duration {
	if initial <= 0 || maxDelay <= 0 {
		return 0
	}
	d := min(initial, maxDelay)
	for i := 1; i < attempt && d < maxDelay; i++ {
		if d > maxDelay/2 {
			d = maxDelay
			break
		}
		d *= 2
	}
	if rnd == nil {
		rnd = rand.Float64
	}
	r := rnd()
	switch {
	case !(r > 0): // also catches NaN
		r = 0
	case r > 1:
		r = 1
	}
	half := d / 2
	// Float rounding may overshoot the other half by a few nanoseconds;
	// clamp before adding so that even a max near the largest Duration
	// cannot overflow.
	return half + min(time.Duration(r*float64(d-half)), d-half)
}

// ParseRetryAfter parses the value of a Retry-After response header, either
// delta-seconds ("120") or an HTTP-date (any format http.ParseTime accepts:
// RFC 1123, RFC 850 or ANSI C asctime), which is taken relative to now.
//
// It returns the delay and true for a valid value; a date in the past gives
// (0, true), and a number of seconds too large for a time.Duration gives the
// largest Duration. It returns (0, false) when the value is empty or
// malformed; a signed number such as "-1" or "+5" is malformed.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil || secs > uint64(math.MaxInt64/int64(time.Second)) {
			// Only digits, so the only possible error is overflow.
			return time.Duration(math.MaxInt64), true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// RetryDelay returns the delay before attempt number attempt+1, after attempt
// failed attempts. When retryAfter, the failed response's Retry-After header
// value, is valid, the receiver is honoured exactly: the delay is what it
// asks for, capped at maxDelay (and 0 when maxDelay is not positive).
// Otherwise it is Backoff(initial, maxDelay, attempt, rnd).
func RetryDelay(initial, maxDelay time.Duration, attempt int, retryAfter string, now time.Time, rnd func() float64) time.Duration {
	if d, ok := ParseRetryAfter(retryAfter, now); ok {
		if maxDelay <= 0 {
			return 0
		}
		return min(d, maxDelay)
	}
	return Backoff(initial, maxDelay, attempt, rnd)
}

// verdict is what becomes of a delivery after an attempt (or before one).
type verdict int

const (
	// verdictSucceeded: the receiver answered 2xx; the delivery is done.
	verdictSucceeded verdict = iota
	// verdictGone: the receiver answered 410; the delivery failed for good
	// and the endpoint is held until its spec changes.
	verdictGone
	// verdictGiveUp: the delivery failed for good (attempts or age used up).
	verdictGiveUp
	// verdictRetry: another attempt is due at decision.retryAt.
	verdictRetry
)

// decision is the retry decision for one delivery: what becomes of it and
// the reason and error text its outcome records.
type decision struct {
	verdict verdict
	// reason is the Delivering condition's reason the outcome carries.
	reason string
	// errText says why an attempt failed or why the delivery was given up
	// (empty on success).
	errText string
	// retryAt is when the next attempt is due (verdictRetry only).
	retryAt time.Time
}

// expiredBeforeAttempt is the decision made before an attempt: a delivery
// accepted more than maxAge before now is given up without one.
func expiredBeforeAttempt(p endpoint.Policy, acceptedAt, now time.Time) (decision, bool) {
	if now.Sub(acceptedAt) <= p.MaxAge {
		return decision{}, false
	}
	return decision{
		verdict: verdictGiveUp,
		reason:  webhooksv1alpha1.ReasonDeliveryFailing,
		errText: fmt.Sprintf("gave up: the event is older than maxAgeSeconds (%s)", p.MaxAge),
	}, true
}

// decide is the retry decision after attempt number attempt (the first is
// 1) of a delivery accepted at acceptedAt ended with res at now: done on a
// 2xx, held on a 410, given up when maxAttempts is reached or the next
// attempt would come after maxAge, and otherwise retried after RetryDelay
// (the receiver's Retry-After, or the backoff drawn with rnd).
func decide(p endpoint.Policy, attempt int, acceptedAt, now time.Time, res *attemptResult, rnd func() float64) decision {
	switch {
	case res.succeeded():
		return decision{verdict: verdictSucceeded, reason: webhooksv1alpha1.ReasonDeliverySucceeded}
	case res.err == nil && res.statusCode == http.StatusGone:
		return decision{
			verdict: verdictGone,
			reason:  webhooksv1alpha1.ReasonEndpointGone,
			errText: "receiver answered 410 Gone: deliveries to this endpoint are stopped until its spec changes",
		}
	}
	dec := decision{reason: webhooksv1alpha1.ReasonDeliveryFailing, errText: res.errorText(p.Timeout)}
	if res.refused {
		dec.reason = webhooksv1alpha1.ReasonEgressRefused
	}
	if attempt >= p.MaxAttempts {
		dec.verdict = verdictGiveUp
		dec.errText += fmt.Sprintf("; gave up after %d attempts (maxAttempts)", attempt)
		return dec
	}
	at := now.Add(RetryDelay(p.InitialBackoff, p.MaxBackoff, attempt, res.retryAfter, now, rnd))
	if at.Sub(acceptedAt) > p.MaxAge {
		dec.verdict = verdictGiveUp
		dec.errText += "; gave up: the next attempt would be after maxAgeSeconds"
		return dec
	}
	dec.verdict = verdictRetry
	dec.retryAt = at
	return dec
}
