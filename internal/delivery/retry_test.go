package delivery

import (
	"math"
	"net/http"
	"testing"
	"time"
)

func fixedRand(v float64) func() float64 { return func() float64 { return v } }

func TestBackoff(t *testing.T) {
	const maxDuration = time.Duration(math.MaxInt64)
	tests := []struct {
		name     string
		initial  time.Duration
		max      time.Duration
		attempt  int
		rnd      float64
		min, top time.Duration // the result must lie in [min, top]
	}{
		{name: "the first retry with no jitter waits half the initial delay", initial: 2 * time.Second, max: time.Hour, attempt: 1, rnd: 0, min: time.Second, top: time.Second},
		{name: "the first retry with full jitter waits nearly the initial delay", initial: 2 * time.Second, max: time.Hour, attempt: 1, rnd: 0.999, min: 1998 * time.Millisecond, top: 2 * time.Second},
		{name: "the second retry doubles: no jitter", initial: 2 * time.Second, max: time.Hour, attempt: 2, rnd: 0, min: 2 * time.Second, top: 2 * time.Second},
		{name: "the second retry doubles: full jitter", initial: 2 * time.Second, max: time.Hour, attempt: 2, rnd: 0.999, min: 3996 * time.Millisecond, top: 4 * time.Second},
		{name: "the fifth retry is initial times 16: no jitter", initial: time.Second, max: time.Hour, attempt: 5, rnd: 0, min: 8 * time.Second, top: 8 * time.Second},
		{name: "the fifth retry is initial times 16: full jitter", initial: time.Second, max: time.Hour, attempt: 5, rnd: 0.999, min: 15984 * time.Millisecond, top: 16 * time.Second},
		{name: "the delay caps at max: no jitter", initial: time.Second, max: 10 * time.Second, attempt: 10, rnd: 0, min: 5 * time.Second, top: 5 * time.Second},
		{name: "the delay caps at max: full jitter", initial: time.Second, max: 10 * time.Second, attempt: 10, rnd: 0.999, min: 9990 * time.Millisecond, top: 10 * time.Second},
		{name: "an initial delay above max is capped", initial: time.Minute, max: 10 * time.Second, attempt: 1, rnd: 0.999, min: 9990 * time.Millisecond, top: 10 * time.Second},
		{name: "attempt 64 does not overflow", initial: time.Second, max: time.Hour, attempt: 64, rnd: 0.999, min: 3596400 * time.Millisecond, top: time.Hour},
		{name: "a huge attempt count does not overflow", initial: time.Second, max: time.Hour, attempt: math.MaxInt, rnd: 0, min: 30 * time.Minute, top: 30 * time.Minute},
		{name: "attempt 64 with the largest max does not overflow", initial: time.Second, max: maxDuration, attempt: 64, rnd: 0.999, min: maxDuration / 2, top: maxDuration},
		{name: "a sub-second initial delay is allowed", initial: 100 * time.Millisecond, max: time.Hour, attempt: 1, rnd: 0, min: 50 * time.Millisecond, top: 50 * time.Millisecond},
		{name: "an attempt below 1 counts as the first", initial: 2 * time.Second, max: time.Hour, attempt: 0, rnd: 0, min: time.Second, top: time.Second},
		{name: "a random value out of range is clamped", initial: 2 * time.Second, max: time.Hour, attempt: 1, rnd: 7, min: 2 * time.Second, top: 2 * time.Second},
		{name: "a negative random value is clamped", initial: 2 * time.Second, max: time.Hour, attempt: 1, rnd: -1, min: time.Second, top: time.Second},
		{name: "a NaN random value is clamped", initial: 2 * time.Second, max: time.Hour, attempt: 1, rnd: math.NaN(), min: time.Second, top: time.Second},
		{name: "a zero initial delay gives no delay", initial: 0, max: time.Hour, attempt: 3, rnd: 0.5, min: 0, top: 0},
		{name: "a negative max gives no delay, never a negative one", initial: time.Second, max: -time.Second, attempt: 3, rnd: 0.5, min: 0, top: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Backoff(tt.initial, tt.max, tt.attempt, fixedRand(tt.rnd))
			if got < tt.min || got > tt.top {
				t.Errorf("Backoff(%v, %v, %d, %v) = %v, want in [%v, %v]", tt.initial, tt.max, tt.attempt, tt.rnd, got, tt.min, tt.top)
			}
		})
	}
}

func TestBackoffGrowsAndStaysWithinBounds(t *testing.T) {
	// For every attempt up to 64 and both ends of the random range, the
	// delay lies in [d/2, d] for d = min(initial*2^(attempt-1), max).
	const initial, maxDelay = 500 * time.Millisecond, 5 * time.Minute
	prev := time.Duration(0)
	for attempt := 1; attempt <= 64; attempt++ {
		d := maxDelay
		if attempt <= 20 && initial<<(attempt-1) < maxDelay {
			d = initial << (attempt - 1)
		}
		lo := Backoff(initial, maxDelay, attempt, fixedRand(0))
		hi := Backoff(initial, maxDelay, attempt, fixedRand(0.999))
		if lo != d/2 {
			t.Errorf("attempt %d: no-jitter delay %v, want %v", attempt, lo, d/2)
		}
		if hi < lo || hi > d {
			t.Errorf("attempt %d: full-jitter delay %v, want in [%v, %v]", attempt, hi, lo, d)
		}
		if lo < prev {
			t.Errorf("attempt %d: delay %v shrank from %v", attempt, lo, prev)
		}
		prev = lo
	}
}

func TestBackoffWithNilRandStaysWithinBounds(t *testing.T) {
	for range 100 {
		if got := Backoff(time.Second, time.Minute, 3, nil); got < 2*time.Second || got > 4*time.Second {
			t.Fatalf("Backoff with nil rnd = %v, want in [2s, 4s]", got)
		}
	}
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name   string
		value  string
		want   time.Duration
		wantOK bool
	}{
		{name: "delta-seconds are seconds", value: "2", want: 2 * time.Second, wantOK: true},
		{name: "surrounding spaces are ignored", value: " 2 ", want: 2 * time.Second, wantOK: true},
		{name: "zero seconds means retry now", value: "0", want: 0, wantOK: true},
		{name: "a large number of seconds is kept", value: "86400", want: 24 * time.Hour, wantOK: true},
		{name: "seconds beyond a Duration saturate rather than wrap", value: "99999999999999999999999", want: time.Duration(math.MaxInt64), wantOK: true},
		{name: "negative seconds are malformed", value: "-1", wantOK: false},
		{name: "a plus sign is malformed", value: "+5", wantOK: false},
		{name: "fractional seconds are malformed", value: "1.5", wantOK: false},
		{name: "text is malformed", value: "abc", wantOK: false},
		{name: "an empty value is absent", value: "", wantOK: false},
		{name: "a blank value is absent", value: "   ", wantOK: false},
		{name: "an RFC 1123 date 3s ahead is 3s", value: now.Add(3 * time.Second).Format(http.TimeFormat), want: 3 * time.Second, wantOK: true},
		{name: "an RFC 850 date 3s ahead is 3s", value: now.Add(3 * time.Second).Format(time.RFC850), want: 3 * time.Second, wantOK: true},
		{name: "an ANSI C date 3s ahead is 3s", value: now.Add(3 * time.Second).Format(time.ANSIC), want: 3 * time.Second, wantOK: true},
		{name: "a date in the past means retry now", value: now.Add(-time.Hour).Format(http.TimeFormat), want: 0, wantOK: true},
		{name: "a date in another format is malformed", value: now.Add(3 * time.Second).Format(time.RFC3339), wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.value, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.value, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name       string
		retryAfter string
		max        time.Duration
		attempt    int
		want       time.Duration
	}{
		{name: "a valid Retry-After is used exactly, even below the backoff", retryAfter: "1", max: time.Hour, attempt: 10, want: time.Second},
		{name: "a valid Retry-After is used exactly, above the backoff", retryAfter: "120", max: time.Hour, attempt: 1, want: 2 * time.Minute},
		{name: "Retry-After zero retries at once", retryAfter: "0", max: time.Hour, attempt: 3, want: 0},
		{name: "Retry-After is capped at max", retryAfter: "7200", max: 10 * time.Minute, attempt: 1, want: 10 * time.Minute},
		{name: "a Retry-After date is used", retryAfter: now.Add(30 * time.Second).Format(http.TimeFormat), max: time.Hour, attempt: 1, want: 30 * time.Second},
		{name: "a Retry-After date is capped at max", retryAfter: now.Add(48 * time.Hour).Format(http.TimeFormat), max: time.Hour, attempt: 1, want: time.Hour},
		{name: "a saturated Retry-After is capped at max", retryAfter: "99999999999999999999999", max: time.Hour, attempt: 1, want: time.Hour},
		{name: "without Retry-After the backoff applies", retryAfter: "", max: time.Hour, attempt: 3, want: 2 * time.Second},
		{name: "a malformed Retry-After falls back to the backoff", retryAfter: "-1", max: time.Hour, attempt: 3, want: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// initial 1s, attempt 3, no jitter: backoff is 4s/2 = 2s.
			got := RetryDelay(time.Second, tt.max, tt.attempt, tt.retryAfter, now, fixedRand(0))
			if got != tt.want {
				t.Errorf("RetryDelay(%q, max %v, attempt %d) = %v, want %v", tt.retryAfter, tt.max, tt.attempt, got, tt.want)
			}
		})
	}
}
