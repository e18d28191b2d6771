//go:build soak

package soak

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// config is a soak run's knobs, read from the environment (make soak passes
// its make variables of the same names).
type config struct {
	// Duration is how long events are posted (SOAK_DURATION, default 3m).
	Duration time.Duration
	// Rate is the offered rate in events per second (SOAK_RATE, default 1000).
	Rate float64
	// IDs gives every event a producer id (SOAK_IDS, default true).
	IDs bool
	// Fail is the share of requests the receiver answers 503 (SOAK_FAIL, default 0.1).
	Fail float64
	// Outage is how long the receiver answers 503 to every request from the
	// start of posting (SOAK_OUTAGE, default 0: none).
	Outage time.Duration
	// Policy is "default" (the CRD's defaults) or "fast" (SOAK_POLICY).
	Policy string
	// Healthy adds a second WebhookConfig whose receiver always answers 204
	// (SOAK_HEALTHY, default false).
	Healthy bool
	// Out is the output directory (SOAK_OUT, default bin/soak/<timestamp>).
	Out string
	// Posters is the number of concurrent posters (SOAK_POSTERS, default 16).
	Posters int
	// SampleEvery is the sampling interval (SOAK_SAMPLE, default 30s).
	SampleEvery time.Duration
	// Drain bounds the wait for deliveries after posting stops (SOAK_DRAIN;
	// default computed from the policy and the outage, see drainBound).
	Drain time.Duration
	// Warmup is how long RSS may grow before the verdict holds its peaks to +20%
	// (SOAK_WARMUP, default 2m; shortened to half of Duration for short runs).
	Warmup time.Duration
}

// policyName values.
const (
	policyDefault = "default"
	policyFast    = "fast"
)

func loadConfig() (config, error) {
	c := config{
		Duration:    3 * time.Minute,
		Rate:        1000,
		IDs:         true,
		Fail:        0.1,
		Policy:      policyDefault,
		Posters:     16,
		SampleEvery: 30 * time.Second,
		Warmup:      2 * time.Minute,
	}
	var errs []string
	dur := func(name string, dst *time.Duration, allowZero bool) {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			return
		}
		if v == "0" {
			if !allowZero {
				errs = append(errs, name+" must be positive")
			}
			*dst = 0
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || (d == 0 && !allowZero) {
			errs = append(errs, fmt.Sprintf("%s=%q: want a positive duration such as 3m", name, v))
			return
		}
		*dst = d
	}
	dur("SOAK_DURATION", &c.Duration, false)
	dur("SOAK_OUTAGE", &c.Outage, true)
	dur("SOAK_SAMPLE", &c.SampleEvery, false)
	dur("SOAK_DRAIN", &c.Drain, true)
	dur("SOAK_WARMUP", &c.Warmup, true)
	if v := strings.TrimSpace(os.Getenv("SOAK_RATE")); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || !(r > 0) || r > 100000 {
			errs = append(errs, fmt.Sprintf("SOAK_RATE=%q: want events per second, > 0", v))
		} else {
			c.Rate = r
		}
	}
	if v := strings.TrimSpace(os.Getenv("SOAK_FAIL")); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f >= 1 {
			errs = append(errs, fmt.Sprintf("SOAK_FAIL=%q: want a share in [0, 1), e.g. 0.1", v))
		} else {
			c.Fail = f
		}
	}
	boolean := func(name string, dst *bool) {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			return
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q: want true or false", name, v))
			return
		}
		*dst = b
	}
	boolean("SOAK_IDS", &c.IDs)
	boolean("SOAK_HEALTHY", &c.Healthy)
	if v := strings.TrimSpace(os.Getenv("SOAK_POLICY")); v != "" {
		if v != policyDefault && v != policyFast {
			errs = append(errs, fmt.Sprintf("SOAK_POLICY=%q: want %s or %s", v, policyDefault, policyFast))
		} else {
			c.Policy = v
		}
	}
	if v := strings.TrimSpace(os.Getenv("SOAK_POSTERS")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1024 {
			errs = append(errs, fmt.Sprintf("SOAK_POSTERS=%q: want 1..1024", v))
		} else {
			c.Posters = n
		}
	}
	c.Out = strings.TrimSpace(os.Getenv("SOAK_OUT"))
	if c.Out == "" {
		c.Out = filepath.Join("bin", "soak", time.Now().Format("20060102-150405"))
	}
	if !filepath.IsAbs(c.Out) {
		// make runs in the repository's root, go test in this package's directory.
		c.Out = filepath.Join(testutil.RepoRoot(), c.Out)
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bad soak settings:\n  %s", strings.Join(errs, "\n  "))
	}
	return c, nil
}

// backoff returns the policy's initial and maximum retry delays, as the
// CRD defaults them for "default" (both policies allow 10 attempts).
func (c config) backoff() (initial, maxDelay time.Duration) {
	if c.Policy == policyFast {
		return time.Second, 10 * time.Second
	}
	return 5 * time.Second, 21600 * time.Second
}

// drainBound is how long the run waits, after posting stops, for every
// accepted event to be delivered: SOAK_DRAIN when set, else 5 minutes plus
// the retry delays of seven failures in a row (an event the receiver's
// random 503s hit seven times; about 45 s with the fast policy, 10.6 minutes
// with the default one), plus, after an outage, four times its length
// (capped at the maximum backoff): an event that failed through the outage
// is retried at most about that long after the outage began, since each
// delay is at most twice the one before, jitter halving it at worst.
func (c config) drainBound() time.Duration {
	if c.Drain > 0 {
		return c.Drain
	}
	initial, maxDelay := c.backoff()
	b := 5 * time.Minute
	d := initial
	for range 7 {
		b += min(d, maxDelay)
		d *= 2
	}
	if c.Outage > 0 {
		b += min(4*c.Outage, maxDelay)
	}
	return b
}

// warmup is the verdict's warm-up: Warmup, or half the posting window when
// the run is too short to have a sample after it.
func (c config) warmup() (time.Duration, bool) {
	if c.Duration >= c.Warmup+c.SampleEvery {
		return c.Warmup, false
	}
	return c.Duration / 2, true
}
