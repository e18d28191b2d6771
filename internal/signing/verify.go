package signing

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is the allowed difference between a request's timestamp
// and the verifier's clock when Verifier.Tolerance is not positive.
const DefaultTolerance = 5 * time.Minute

var (
	// ErrMissingHeaders is returned when HeaderID, HeaderTimestamp or
	// HeaderSignature is absent or empty.
	ErrMissingHeaders = errors.New("missing webhook headers")

	// ErrInvalidTimestamp is returned when HeaderTimestamp is not a decimal
	// integer.
	ErrInvalidTimestamp = errors.New("invalid webhook timestamp")

	// ErrTimestampTooOld is returned when HeaderTimestamp is more than the
	// tolerance before the verifier's clock.
	ErrTimestampTooOld = errors.New("webhook timestamp too old")

	// ErrTimestampTooNew is returned when HeaderTimestamp is more than the
	// tolerance after the verifier's clock.
	ErrTimestampTooNew = errors.New("webhook timestamp too new")

	// ErrNoMatchingSignature is returned when no "v1" entry of
	// HeaderSignature matches the request under any of the verifier's keys.
	ErrNoMatchingSignature = errors.New("no matching webhook signature")
)

// Verifier checks incoming requests signed per Standard Webhooks v1.
type Verifier struct {
	// Keys are the accepted HMAC keys, e.g. from ParseSecrets.
	Keys [][]byte
	// Tolerance is the maximum allowed difference between the request
	// timestamp and Now; DefaultTolerance (5 minutes) when zero or negative.
	Tolerance time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// Verify checks the signature headers in h against body. It returns nil if
// all three headers are present and non-empty, HeaderTimestamp is a decimal
// integer within ±Tolerance of Now, and at least one "v1,<sig>" entry of the
// space-separated HeaderSignature list equals the signature of the request
// under one of Keys (compared in constant time). Entries with other version
// prefixes are ignored.
//
// Otherwise the returned error wraps, checked in this order, ErrNoSecret (no
// Keys), ErrMissingHeaders, ErrInvalidTimestamp, ErrTimestampTooOld or
// ErrTimestampTooNew, or ErrNoMatchingSignature.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	if len(v.Keys) == 0 {
		return fmt.Errorf("verifier has no keys: %w", ErrNoSecret)
	}
	id := h.Get(HeaderID)
	ts := h.Get(HeaderTimestamp)
	sigs := h.Get(HeaderSignature)
	for _, hv := range [...]struct{ name, value string }{
		{HeaderID, id}, {HeaderTimestamp, ts}, {HeaderSignature, sigs},
	} {
		if hv.value == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeaders, hv.name)
		}
	}

	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: not a decimal integer", ErrInvalidTimestamp)
	}
	tolerance := v.Tolerance
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	switch age := now().Sub(time.Unix(unix, 0)); {
	case age > tolerance:
		return fmt.Errorf("%w: %s old, tolerance %s", ErrTimestampTooOld, age.Truncate(time.Second), tolerance)
	case age < -tolerance:
		return fmt.Errorf("%w: %s in the future, tolerance %s", ErrTimestampTooNew, (-age).Truncate(time.Second), tolerance)
	}

	expected := make([][]byte, len(v.Keys))
	for i, key := range v.Keys {
		// Sign over the header as sent, as the spec defines it.
		expected[i] = appendMAC(nil, key, id, ts, body)
	}
	for _, entry := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(entry, ",")
		if !ok || version != signatureVersion {
			continue
		}
		for _, want := range expected {
			if hmac.Equal([]byte(sig), want) {
				return nil
			}
		}
	}
	return ErrNoMatchingSignature
}
