package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// The delivery log: every delivery (one per event and endpoint) as it was
// stored, and every attempt made of it, kept for --delivery-log-retention
// within --delivery-log-max-bytes (the oldest messages go first). It is
// what the aggregated API delivery.wablast.io serves.
const (
	// StreamDeliveryLog is the delivery log's stream.
	StreamDeliveryLog = "WEBHOOK_DELIVERY_LOG"
	// SubjDeliveryLog is its subjects' prefix:
	// wh.lg.<namespace>.<endpoint token>.<escaped event id>.
	SubjDeliveryLog = "wh.lg"
)

// Delivery log defaults.
const (
	DefaultDeliveryLogRetention = 72 * time.Hour
	// DefaultDeliveryLogMaxBytes is the log's default size cap: 1 GiB holds
	// about a million deliveries of 1 KiB bodies with a few attempts each.
	DefaultDeliveryLogMaxBytes int64 = 1 << 30
	// DefaultDeliveryLogMaxRecords is the log's default cap on messages
	// (records): the store indexes every delivery's subject in memory
	// (a soak at 1,000 events/s: about 500 bytes of heap a kept delivery),
	// so the count, not only the bytes, bounds what the log costs in
	// memory: 100,000 records, about 50,000 deliveries, about 25 MiB.
	DefaultDeliveryLogMaxRecords int64 = 100_000
	// DefaultDeliveryLogBodyBytes is the default cap of a body kept in the
	// log; a larger body is kept as its size and SHA-256 only.
	DefaultDeliveryLogBodyBytes = 16 << 10
	// LogResponseBodyBytes is how much of a response body the log keeps.
	LogResponseBodyBytes = 1 << 10
	// LogResponseHeaderBytes caps the response headers the log keeps (all
	// names and values together); headers past it are left out.
	LogResponseHeaderBytes = 2 << 10
)

// DeliveryLogSubject is the delivery log subject of the delivery of event
// eventID to endpoint ns/name: wh.lg.<namespace>.<endpoint token>.<escaped
// event id>. One subject a delivery lets JetStream find one delivery's
// records, and one endpoint's, without reading the rest of the log.
func DeliveryLogSubject(ns, name, eventID string) string {
	return SubjDeliveryLog + "." + ns + "." + Token(name) + "." + EscapeEventID(eventID)
}

// DeliveryLogFilter is the subject filter of the log records of namespace
// ns, narrowed to the endpoint name and to the event eventID when they are
// not empty.
func DeliveryLogFilter(ns, name, eventID string) string {
	e, id := "*", "*"
	if name != "" {
		e = Token(name)
	}
	if eventID != "" {
		id = EscapeEventID(eventID)
	}
	return SubjDeliveryLog + "." + ns + "." + e + "." + id
}

// deliveryLogOldSubjects matches the subjects of the log's first format
// (wh.lg.<namespace>.<endpoint token>, the records of many events in one
// message), which Open drops.
const deliveryLogOldSubjects = SubjDeliveryLog + ".*.*"

// EndpointOfLogSubject parses a delivery log subject back into the endpoint's key.
func EndpointOfLogSubject(subj string) (types.NamespacedName, bool) {
	parts := strings.Split(subj, ".")
	if len(parts) != 5 || parts[0]+"."+parts[1] != SubjDeliveryLog {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: parts[2], Name: strings.ReplaceAll(parts[3], "_", ".")}, true
}

// EscapeEventID escapes an event id into a NATS subject token that is also
// a valid URL path segment, one to one: lowercase letters, digits and "-"
// stay, every other byte becomes "_" and two lowercase hex digits ("." is
// "_2e", "A" is "_41"). An empty id is "_".
func EscapeEventID(id string) string {
	if id == "" {
		return "_"
	}
	var b strings.Builder
	b.Grow(len(id))
	const hex = "0123456789abcdef"
	for i := range len(id) {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// Kinds of delivery log records.
const (
	// LogStored: the delivery was stored (accepted, fanned out, replayed or
	// resent); it carries the body.
	LogStored = "Stored"
	// LogAttempt: an attempt was made, or the delivery was given up
	// without one (Attempted false).
	LogAttempt = "Attempt"
)

// LogRecord is one entry of the delivery log. A message of the log stream
// carries a JSON array of them, all of one delivery (endpoint and event).
type LogRecord struct {
	Kind       string    `json:"kind"`
	UID        types.UID `json:"uid"`
	EventID    string    `json:"eventID"`
	EventType  string    `json:"eventType"`
	AcceptedAt string    `json:"acceptedAt,omitempty"`

	// Stored records: the body when it is at most the cap, and always its
	// size and SHA-256 (hex).
	Body       json.RawMessage `json:"body,omitempty"`
	BodyBytes  int             `json:"bodyBytes,omitempty"`
	BodySHA256 string          `json:"bodySHA256,omitempty"`
	// Origin says why a Stored record was written: "" for an accepted
	// event, "Replay" or "Resend".
	Origin string `json:"origin,omitempty"`

	// Attempt records.
	Attempt         int32                           `json:"attempt,omitempty"`
	Attempted       bool                            `json:"attempted,omitempty"`
	Time            time.Time                       `json:"time,omitzero"`
	DurationMS      int64                           `json:"durationMS,omitempty"`
	Host            string                          `json:"host,omitempty"`
	StatusCode      int32                           `json:"statusCode,omitempty"`
	Result          webhooksv1alpha1.DeliveryResult `json:"result,omitempty"`
	Error           string                          `json:"error,omitempty"`
	ResponseHeaders map[string]string               `json:"responseHeaders,omitempty"`
	ResponseBody    string                          `json:"responseBody,omitempty"`
	NextAttempt     time.Time                       `json:"nextAttempt,omitzero"`
}

// StoredRecord is the Stored record of d to endpoint uid, its body kept when
// it is at most bodyCap bytes (and a JSON value).
func StoredRecord(uid types.UID, d *Delivery, bodyCap int, origin string) LogRecord {
	sum := sha256.Sum256(d.Body)
	r := LogRecord{
		Kind: LogStored, UID: uid, EventID: d.EventID, EventType: d.EventType, AcceptedAt: d.AcceptedAt,
		BodyBytes: len(d.Body), BodySHA256: hex.EncodeToString(sum[:]), Origin: origin,
	}
	if len(d.Body) <= bodyCap && json.Valid(d.Body) {
		r.Body = d.Body
	}
	return r
}

// AttemptRecord is the Attempt record of oc.
func AttemptRecord(oc *Outcome) LogRecord {
	return LogRecord{
		Kind: LogAttempt, UID: oc.UID, EventID: oc.EventID, EventType: oc.EventType, AcceptedAt: oc.AcceptedAt,
		Attempt: oc.Attempt, Attempted: oc.Attempted, Time: oc.Time, DurationMS: oc.DurationMS,
		Host: oc.Host, StatusCode: oc.StatusCode, Result: oc.Result, Error: oc.Error,
		ResponseHeaders: oc.ResponseHeaders, ResponseBody: oc.ResponseBody, NextAttempt: oc.NextAttempt,
	}
}

// DeliveryLogMsgs are the log messages of records, all of endpoint
// ns/name: one a delivery (event), holding its records in their order.
func DeliveryLogMsgs(ns, name string, records []LogRecord) []*nats.Msg {
	if len(records) == 1 {
		return []*nats.Msg{deliveryLogMsg(ns, name, records)}
	}
	var order []string
	byEvent := map[string][]LogRecord{}
	for _, r := range records {
		if _, ok := byEvent[r.EventID]; !ok {
			order = append(order, r.EventID)
		}
		byEvent[r.EventID] = append(byEvent[r.EventID], r)
	}
	msgs := make([]*nats.Msg, 0, len(order))
	for _, id := range order {
		msgs = append(msgs, deliveryLogMsg(ns, name, byEvent[id]))
	}
	return msgs
}

// deliveryLogMsg is the log message of records, all of one delivery.
func deliveryLogMsg(ns, name string, records []LogRecord) *nats.Msg {
	size := 2
	for i := range records {
		size += 512 + len(records[i].Body) + len(records[i].ResponseBody) + len(records[i].Error)
	}
	data := appendLogRecords(make([]byte, 0, size), records)
	return &nats.Msg{Subject: DeliveryLogSubject(ns, name, records[0].EventID), Data: data}
}

// DecodeLogRecords decodes a delivery log message's data.
func DecodeLogRecords(data []byte) ([]LogRecord, error) {
	var rs []LogRecord
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("decoding delivery log records: %w", err)
	}
	return rs, nil
}

// responseHeadersDropped are response headers the log never keeps: they
// may carry a receiver's credentials or session.
var responseHeadersDropped = map[string]bool{
	"Set-Cookie": true, "Authorization": true, "Proxy-Authenticate": true, "Www-Authenticate": true,
}

// LogResponseHeaders returns the response headers the log keeps: one value
// a name (several joined with ", "), cookies and authentication headers
// left out, each value cut to 256 bytes, at most LogResponseHeaderBytes in
// all (headers past it are left out, in name order).
func LogResponseHeaders(h http.Header) map[string]string {
	if len(h) == 0 {
		return nil
	}
	out := make(map[string]string, len(h))
	total := 0
	for _, k := range slices.Sorted(maps.Keys(h)) {
		if responseHeadersDropped[k] {
			continue
		}
		v := truncateUTF8(strings.Join(h[k], ", "), 256)
		if total+len(k)+len(v) > LogResponseHeaderBytes {
			break
		}
		total += len(k) + len(v)
		out[k] = v
	}
	return out
}

// LogResponseBody returns the first LogResponseBodyBytes of a response
// body as text, cut at a UTF-8 boundary, invalid bytes replaced.
func LogResponseBody(b []byte) string {
	return truncateUTF8(strings.ToValidUTF8(string(b[:min(len(b), LogResponseBodyBytes)]), "\uFFFD"), LogResponseBodyBytes)
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// ErrNoDeliveryLog is returned when the delivery log is turned off.
var ErrNoDeliveryLog = errors.New("the delivery log is turned off (--delivery-log-retention=0)")
