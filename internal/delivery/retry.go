package delivery

import (
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
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
	for i := 0; i < len(s); i++ {
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
