package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"

	"k8s.io/apimachinery/pkg/types"
)

// outcomesFormat is the first byte of an outcomes message in the binary
// encoding of EncodeOutcomes. Messages written by earlier versions are JSON:
// an array (first byte '['), or before batching a single object ('{').
// Format 3 adds, after an outcome flagged ocReplacesFailure, one more
// varint (Outcome.ReplacesFailure); format 2 has no such flag. Format 4
// adds the flag ocReplacesSuccess, followed the same way by a varint
// (Outcome.ReplacesSuccess); a message is written in format 4 only when
// one of its outcomes has it, so versions that read format 3 read every
// other message.
const (
	outcomesFormat   = 3
	outcomesFormatV2 = 2
	outcomesFormatV4 = 4
)

// Flags of an encoded outcome.
const (
	ocAttempted = 1 << iota
	ocGone
	ocHasTime
	ocHasNextAttempt
	ocReplacesFailure
	ocReplacesSuccess
)

// EncodeOutcomes encodes one endpoint's outcomes for the outcomes stream: a
// format byte, the count, then per outcome a flags byte, nine length-prefixed
// strings and six varints, cheaper to write and read than JSON (the
// aggregator reads every outcome; docs/benchmarks.md has the figures).
func EncodeOutcomes(ocs []*Outcome) []byte {
	n := 1 + binary.MaxVarintLen32
	for _, oc := range ocs {
		n += 1 + 9*binary.MaxVarintLen32 + 7*binary.MaxVarintLen64 + len(oc.UID) + len(oc.Namespace) + len(oc.Name) +
			len(oc.EventID) + len(oc.EventType) + len(oc.Result) + len(oc.Reason) + len(oc.Error) + len(oc.AcceptedAt)
	}
	buf := make([]byte, 0, n)
	format := byte(outcomesFormat)
	for _, oc := range ocs {
		if !oc.ReplacesSuccess.IsZero() {
			format = outcomesFormatV4
		}
	}
	buf = append(buf, format)
	buf = binary.AppendUvarint(buf, uint64(len(ocs)))
	for _, oc := range ocs {
		var flags byte
		if oc.Attempted {
			flags |= ocAttempted
		}
		if oc.Gone {
			flags |= ocGone
		}
		if !oc.Time.IsZero() {
			flags |= ocHasTime
		}
		if !oc.NextAttempt.IsZero() {
			flags |= ocHasNextAttempt
		}
		if !oc.ReplacesFailure.IsZero() {
			flags |= ocReplacesFailure
		}
		if !oc.ReplacesSuccess.IsZero() {
			flags |= ocReplacesSuccess
		}
		buf = append(buf, flags)
		for _, s := range [...]string{string(oc.UID), oc.Namespace, oc.Name, oc.EventID, oc.EventType, string(oc.Result), oc.Reason, oc.Error, oc.AcceptedAt} {
			buf = binary.AppendUvarint(buf, uint64(len(s)))
			buf = append(buf, s...)
		}
		var t, next int64
		if flags&ocHasTime != 0 {
			t = oc.Time.UnixNano()
		}
		if flags&ocHasNextAttempt != 0 {
			next = oc.NextAttempt.UnixNano()
		}
		for _, v := range [...]int64{oc.Generation, int64(oc.Attempt), int64(oc.StatusCode), oc.DurationMS, t, next} {
			buf = binary.AppendVarint(buf, v)
		}
		if flags&ocReplacesFailure != 0 {
			buf = binary.AppendVarint(buf, oc.ReplacesFailure.UnixNano())
		}
		if flags&ocReplacesSuccess != 0 {
			buf = binary.AppendVarint(buf, oc.ReplacesSuccess.UnixNano())
		}
	}
	return buf
}

var errBadOutcomes = errors.New("malformed outcomes message")

// DecodeOutcomes reads an outcomes message in any format ever written.
func DecodeOutcomes(data []byte) ([]Outcome, error) {
	if len(data) > 0 && (data[0] == outcomesFormat || data[0] == outcomesFormatV2 || data[0] == outcomesFormatV4) {
		return decodeBinaryOutcomes(data[1:], data[0])
	}
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) > 0 && data[0] == '[' {
		var ocs []Outcome
		err := json.Unmarshal(data, &ocs)
		return ocs, err
	}
	var oc Outcome
	if err := json.Unmarshal(data, &oc); err != nil {
		return nil, err
	}
	return []Outcome{oc}, nil
}

func decodeBinaryOutcomes(data []byte, format byte) ([]Outcome, error) {
	count, n := binary.Uvarint(data)
	// Every outcome takes at least 16 bytes.
	if n <= 0 || count == 0 || count > uint64(len(data)/16+1) {
		return nil, fmt.Errorf("%w: bad count", errBadOutcomes)
	}
	data = data[n:]
	ocs := make([]Outcome, count)
	for i := range ocs {
		if len(data) == 0 {
			return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
		}
		flags := data[0]
		data = data[1:]
		if format == outcomesFormatV2 && flags&ocReplacesFailure != 0 || format != outcomesFormatV4 && flags&ocReplacesSuccess != 0 {
			return nil, fmt.Errorf("%w: flags %#x", errBadOutcomes, flags)
		}
		var strs [9]string
		for j := range strs {
			l, n := binary.Uvarint(data)
			if n <= 0 || l > uint64(len(data)-n) {
				return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
			}
			strs[j] = string(data[n : n+int(l)])
			data = data[n+int(l):]
		}
		var ints [6]int64
		for j := range ints {
			v, n := binary.Varint(data)
			if n <= 0 {
				return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
			}
			ints[j] = v
			data = data[n:]
		}
		oc := &ocs[i]
		oc.UID, oc.Namespace, oc.Name = types.UID(strs[0]), strs[1], strs[2]
		oc.EventID, oc.EventType = strs[3], strs[4]
		oc.Result, oc.Reason, oc.Error, oc.AcceptedAt = webhooksv1alpha1.DeliveryResult(strs[5]), strs[6], strs[7], strs[8]
		oc.Generation, oc.Attempt, oc.StatusCode, oc.DurationMS = ints[0], int32(ints[1]), int32(ints[2]), ints[3]
		oc.Attempted, oc.Gone = flags&ocAttempted != 0, flags&ocGone != 0
		if flags&ocHasTime != 0 {
			oc.Time = time.Unix(0, ints[4]).UTC()
		}
		if flags&ocHasNextAttempt != 0 {
			oc.NextAttempt = time.Unix(0, ints[5]).UTC()
		}
		if flags&ocReplacesFailure != 0 {
			v, n := binary.Varint(data)
			if n <= 0 {
				return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
			}
			data = data[n:]
			oc.ReplacesFailure = time.Unix(0, v).UTC()
		}
		if flags&ocReplacesSuccess != 0 {
			v, n := binary.Varint(data)
			if n <= 0 {
				return nil, fmt.Errorf("%w: truncated", errBadOutcomes)
			}
			data = data[n:]
			oc.ReplacesSuccess = time.Unix(0, v).UTC()
		}
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after %d outcomes", errBadOutcomes, len(data), count)
	}
	return ocs, nil
}

// Outcome is one attempt's result (or a give-up without an attempt), as
// recorded in the outcomes stream and folded into the endpoint's stats.
type Outcome struct {
	UID         types.UID                       `json:"uid"`
	Namespace   string                          `json:"namespace"`
	Name        string                          `json:"name"`
	Generation  int64                           `json:"generation"`
	EventID     string                          `json:"eventID"`
	EventType   string                          `json:"eventType"`
	Attempt     int32                           `json:"attempt"`
	Attempted   bool                            `json:"attempted"`
	StatusCode  int32                           `json:"statusCode,omitempty"`
	DurationMS  int64                           `json:"durationMS"`
	Result      webhooksv1alpha1.DeliveryResult `json:"result"`
	Reason      string                          `json:"reason"`
	Error       string                          `json:"error,omitempty"`
	Gone        bool                            `json:"gone,omitempty"`
	Time        time.Time                       `json:"time"`
	NextAttempt time.Time                       `json:"nextAttempt,omitzero"`
	// AcceptedAt is the delivery's acceptance header: with the UID and event
	// ID it names one life of one event at one endpoint (a replay starts a new
	// one), which is what the aggregator deduplicates on.
	AcceptedAt string `json:"acceptedAt,omitempty"`
	// ReplacesFailure is set on the first outcome of a replayed delivery
	// only: when the event had failed for good at this endpoint before. The
	// stats take that failure back (the event is given another go) and count
	// the replay's final outcome instead; the event is not sent again.
	ReplacesFailure time.Time `json:"replacesFailure,omitzero"`
	// ReplacesSuccess is set on the first outcome of a resent delivery
	// of an event delivered before: the stats take that success back and
	// count the resend's final outcome instead; the event is not sent again.
	ReplacesSuccess time.Time `json:"replacesSuccess,omitzero"`

	// For the delivery log only, not in the outcomes stream: the URL's
	// host, and what the log keeps of the response (LogResponseHeaders,
	// LogResponseBody).
	Host            string            `json:"-"`
	ResponseHeaders map[string]string `json:"-"`
	ResponseBody    string            `json:"-"`
}
