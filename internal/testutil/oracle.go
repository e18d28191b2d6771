package testutil

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// This file is the content oracle every test receiver of the project uses:
// a Ledger of what producers posted and a Receiver that keeps every
// delivered body by webhook-id, verifies its signature with the official
// Standard Webhooks library, and checks that each delivery carries exactly
// the type, data and timestamp that were posted. Counting ids is not
// enough: a batch bug once delivered other lines' data, validly signed,
// through every test that counted them.

// Posted is one event as a producer posted it.
type Posted struct {
	// ID is the event's webhook-id: the producer's id, or the one the 202
	// answer gave for an event posted without one.
	ID string
	// Type is the posted type.
	Type string
	// Data is the posted data object, as the producer wrote it.
	Data json.RawMessage
	// Timestamp is the posted timestamp, "" when the producer gave none.
	Timestamp string
}

// JSON returns the event as a producer posts it: {"id", "type",
// "timestamp", "data"}, id and timestamp only when set (withID false
// leaves the id out, so that the API generates one).
func (p Posted) JSON(withID bool) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	if withID && p.ID != "" {
		b.WriteString(`"id":`)
		writeJSONString(&b, p.ID)
		b.WriteByte(',')
	}
	b.WriteString(`"type":`)
	writeJSONString(&b, p.Type)
	if p.Timestamp != "" {
		b.WriteString(`,"timestamp":`)
		writeJSONString(&b, p.Timestamp)
	}
	b.WriteString(`,"data":`)
	b.Write(p.Data)
	b.WriteByte('}')
	return b.Bytes()
}

func writeJSONString(b *bytes.Buffer, s string) {
	b.Write(mustMarshal(s))
}

// mustMarshal is json.Marshal(v) for the values the test data is made of,
// which always encode.
func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// NDJSON joins events into a batch body, one event a line.
func NDJSON(events []Posted, withID bool) []byte {
	var b bytes.Buffer
	for _, ev := range events {
		b.Write(ev.JSON(withID))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// Ledger records what was posted, by webhook-id, for receivers to check
// deliveries against. One Ledger may serve several receivers (an event
// fanned out to several endpoints). It is safe for concurrent use.
type Ledger struct {
	mu     sync.Mutex
	events map[string]Posted
	errs   []string
}

// NewLedger returns an empty Ledger.
func NewLedger() *Ledger { return &Ledger{events: map[string]Posted{}} }

// Add records posted events, which must have their ID. Adding an id again
// with other content is recorded as an error that Check reports (the
// contract keeps the first event of an id).
func (l *Ledger) Add(events ...Posted) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range events {
		if ev.ID == "" {
			l.errs = append(l.errs, fmt.Sprintf("ledger: an event of type %s was added without an id", ev.Type))
			continue
		}
		if old, ok := l.events[ev.ID]; ok {
			if old.Type != ev.Type || !jsonEqual(old.Data, ev.Data) || old.Timestamp != ev.Timestamp {
				l.errs = append(l.errs, fmt.Sprintf("ledger: id %s was posted twice with different content", ev.ID))
			}
			continue
		}
		l.events[ev.ID] = ev
	}
}

// Accepted records events after the API answered 202 with body: the
// answer to one JSON event ({"id": ...}) or to a batch ({"events": [...]}),
// in the order posted. Events posted without an id get the id the answer
// gave; events posted with one must get that id back. It returns the ids
// in order.
func (l *Ledger) Accepted(posted []Posted, body []byte) ([]string, error) {
	var one struct {
		ID     string `json:"id"`
		Events []struct {
			ID string `json:"id"`
		} `json:"events"`
	}
	if err := json.Unmarshal(body, &one); err != nil {
		return nil, fmt.Errorf("the 202 body %q is not JSON: %w", truncateBody(body), err)
	}
	var ids []string
	if one.Events != nil {
		for _, e := range one.Events {
			ids = append(ids, e.ID)
		}
	} else if one.ID != "" {
		ids = []string{one.ID}
	}
	if len(ids) != len(posted) {
		return nil, fmt.Errorf("the 202 body names %d events, %d were posted: %s", len(ids), len(posted), truncateBody(body))
	}
	out := make([]Posted, len(posted))
	for i, p := range posted {
		if p.ID != "" && p.ID != ids[i] {
			return nil, fmt.Errorf("event %d was posted with id %s, the 202 answered %s", i, p.ID, ids[i])
		}
		p.ID = ids[i]
		out[i] = p
	}
	l.Add(out...)
	return ids, nil
}

// Get returns the event posted with id.
func (l *Ledger) Get(id string) (Posted, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev, ok := l.events[id]
	return ev, ok
}

// IDs returns every recorded id.
func (l *Ledger) IDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := make([]string, 0, len(l.events))
	for id := range l.events {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Len returns the number of recorded events.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// Delivery is one request a Receiver verified.
type Delivery struct {
	// ID is the webhook-id header.
	ID string
	// Path is the request's URL path.
	Path string
	// Body is the request body, as signed.
	Body []byte
	// Arrived is when the body was read.
	Arrived time.Time
}

// Receiver is the content oracle: an http.Handler (or, through Record, the
// core of another test's receiver) that verifies every request with the
// official Standard Webhooks library, keeps every delivered body by
// webhook-id, and checks, in Check, each body against the Ledger.
type Receiver struct {
	// Ledger is what was posted; Check compares every delivery with it.
	Ledger *Ledger
	// Respond answers one verified request and returns the status it wrote
	// (0 when it wrote none). Nil answers 204.
	Respond func(w http.ResponseWriter, r *http.Request, d Delivery) int
	// IgnoreTimestamp skips the library's 5-minute tolerance on
	// webhook-timestamp (tests on a fake clock).
	IgnoreTimestamp bool
	// Expect, when set, gives the expected event for an id the Ledger does
	// not hold (test deliveries, which no producer posted); ok false makes
	// the delivery unexpected.
	Expect func(id string) (Posted, bool)

	wh *standardwebhooks.Webhook

	mu        sync.Mutex
	bodies    map[string][]byte // first verified body per webhook-id
	first     map[string]time.Time
	requests  map[string]int // verified requests per webhook-id
	copyDiffs []string       // ids whose later copies differ from the first
	badSig    int
	badSigErr error
	total     int
}

// officialWebhook is the official library's verifier and signer for a
// secret as the operator reads it: "whsec_" and base64, or the raw bytes.
func officialWebhook(secret string) (*standardwebhooks.Webhook, error) {
	if strings.HasPrefix(secret, "whsec_") {
		return standardwebhooks.NewWebhook(secret)
	}
	return standardwebhooks.NewWebhookRaw([]byte(secret))
}

// NewReceiver returns a Receiver for endpoints signed with secret (a
// "whsec_" secret or a raw one of at least 16 bytes, as the operator
// accepts) that checks against ledger.
func NewReceiver(secret string, ledger *Ledger) (*Receiver, error) {
	wh, err := officialWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("the signing secret is not usable by the official library: %w", err)
	}
	return &Receiver{
		Ledger:   ledger,
		wh:       wh,
		bodies:   map[string][]byte{},
		first:    map[string]time.Time{},
		requests: map[string]int{},
	}, nil
}

// ServeHTTP verifies and records the request, then answers with Respond.
// A request whose signature does not verify is answered 401.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	d, err := rc.Record(r.Header, r.URL.Path, body)
	if err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if rc.Respond == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	rc.Respond(w, r, d)
}

// Record verifies one request's signature with the official library and
// keeps its body by webhook-id. A later copy of an id must carry the same
// body as the first. It returns an error, and records the request as badly
// signed, when the signature does not verify.
func (rc *Receiver) Record(h http.Header, path string, body []byte) (Delivery, error) {
	var err error
	if rc.IgnoreTimestamp {
		err = rc.wh.VerifyIgnoringTimestamp(body, h)
	} else {
		err = rc.wh.Verify(body, h)
	}
	id := h.Get("webhook-id")
	now := time.Now()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.total++
	if err != nil {
		rc.badSig++
		if rc.badSigErr == nil {
			rc.badSigErr = fmt.Errorf("webhook-id %q: %w", id, err)
		}
		return Delivery{}, err
	}
	rc.requests[id]++
	if firstBody, ok := rc.bodies[id]; ok {
		if !bytes.Equal(firstBody, body) {
			rc.copyDiffs = append(rc.copyDiffs, id)
		}
	} else {
		rc.bodies[id] = bytes.Clone(body)
		rc.first[id] = now
	}
	return Delivery{ID: id, Path: path, Body: body, Arrived: now}, nil
}

// Unique returns the number of distinct webhook-ids verified.
func (rc *Receiver) Unique() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.bodies)
}

// Requests returns the verified requests per webhook-id (a copy).
func (rc *Receiver) Requests() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.requests)
}

// FirstArrivals returns when each webhook-id first arrived (a copy).
func (rc *Receiver) FirstArrivals() map[string]time.Time {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.first)
}

// Body returns the first verified body of id.
func (rc *Receiver) Body(id string) ([]byte, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b, ok := rc.bodies[id]
	return b, ok
}

// BadSignatures returns the number of requests that did not verify.
func (rc *Receiver) BadSignatures() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.badSig
}

// Reset forgets every delivery (the Ledger is kept).
func (rc *Receiver) Reset() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.bodies = map[string][]byte{}
	rc.first = map[string]time.Time{}
	rc.requests = map[string]int{}
	rc.copyDiffs, rc.badSig, rc.badSigErr, rc.total = nil, 0, nil, 0
}

// Check compares every delivery with what was posted: each verified body
// must be the envelope {"type", "timestamp", "data"} of a posted event with
// the same type, data equal as a JSON value (numbers compared as written),
// and, where the producer gave one, the same instant as the posted
// timestamp in the documented form (RFC 3339, UTC, milliseconds); every
// copy of an id must be the same body; no request may fail verification.
// It returns one error listing every mismatch (the first few in full), or
// nil.
func (rc *Receiver) Check() error {
	rc.mu.Lock()
	ids := make([]string, 0, len(rc.bodies))
	// A copy: deliveries may still arrive while the bodies are compared.
	bodies := make(map[string][]byte, len(rc.bodies))
	for id, b := range rc.bodies {
		ids = append(ids, id)
		bodies[id] = b
	}
	var problems []string
	if rc.badSig > 0 {
		problems = append(problems, fmt.Sprintf("%d requests failed the official library's verification (first: %v)", rc.badSig, rc.badSigErr))
	}
	for _, id := range rc.copyDiffs {
		problems = append(problems, fmt.Sprintf("webhook-id %s arrived again with a different body", id))
	}
	rc.mu.Unlock()
	slices.Sort(ids)
	mismatches := 0
	for _, id := range ids {
		if err := rc.checkOne(id, bodies[id]); err != nil {
			mismatches++
			problems = append(problems, err.Error())
		}
	}
	l := rc.Ledger
	if l != nil {
		l.mu.Lock()
		problems = append(problems, l.errs...)
		l.mu.Unlock()
	}
	if len(problems) == 0 {
		return nil
	}
	const show = 10
	msg := fmt.Sprintf("%d of %d delivered events do not match what was posted", mismatches, len(ids))
	if mismatches == 0 {
		msg = "deliveries are not what was posted"
	}
	shown := problems[:min(len(problems), show)]
	msg += ":\n  " + strings.Join(shown, "\n  ")
	if more := len(problems) - len(shown); more > 0 {
		msg += fmt.Sprintf("\n  and %d more", more)
	}
	return errors.New(msg)
}

// CheckAll is Check, and also requires every id in want to have arrived.
func (rc *Receiver) CheckAll(want []string) error {
	var missing []string
	rc.mu.Lock()
	for _, id := range want {
		if _, ok := rc.bodies[id]; !ok {
			missing = append(missing, id)
		}
	}
	rc.mu.Unlock()
	err := rc.Check()
	if len(missing) == 0 {
		return err
	}
	msg := fmt.Sprintf("%d of %d posted events never arrived (first: %s)", len(missing), len(want), strings.Join(missing[:min(len(missing), 5)], ", "))
	if err != nil {
		msg += "; " + err.Error()
	}
	return errors.New(msg)
}

// envelope is a delivered body.
type envelope struct {
	Type      *string         `json:"type"`
	Timestamp *string         `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// CheckBody compares one delivered body with the posted event want; it is
// Check's comparison, for tests that hold a body of their own.
func CheckBody(want Posted, body []byte) error {
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return fmt.Errorf("webhook-id %s: the body is not the envelope {type, timestamp, data}: %w: %s", want.ID, err, truncateBody(body))
	}
	if dec.More() {
		return fmt.Errorf("webhook-id %s: the body holds more than one JSON value: %s", want.ID, truncateBody(body))
	}
	switch {
	case env.Type == nil || env.Timestamp == nil || env.Data == nil:
		return fmt.Errorf("webhook-id %s: the envelope lacks type, timestamp or data: %s", want.ID, truncateBody(body))
	case *env.Type != want.Type:
		return fmt.Errorf("webhook-id %s: type %q, posted %q", want.ID, *env.Type, want.Type)
	case !jsonEqual(env.Data, want.Data):
		return fmt.Errorf("webhook-id %s: data %s, posted %s", want.ID, truncateBody(env.Data), truncateBody(want.Data))
	}
	got, err := time.Parse(time.RFC3339Nano, *env.Timestamp)
	if err != nil || !strings.HasSuffix(*env.Timestamp, "Z") || len(*env.Timestamp) != len("2006-01-02T15:04:05.000Z") {
		return fmt.Errorf("webhook-id %s: timestamp %q is not RFC 3339 in UTC with milliseconds", want.ID, *env.Timestamp)
	}
	if want.Timestamp != "" {
		posted, err := time.Parse(time.RFC3339Nano, want.Timestamp)
		if err != nil {
			return fmt.Errorf("webhook-id %s: the posted timestamp %q does not parse: %w", want.ID, want.Timestamp, err)
		}
		if wantTS := posted.UTC().Format("2006-01-02T15:04:05.000Z07:00"); wantTS != *env.Timestamp || !got.Equal(posted.Truncate(time.Millisecond)) {
			return fmt.Errorf("webhook-id %s: timestamp %q, posted %q (expected %q)", want.ID, *env.Timestamp, want.Timestamp, wantTS)
		}
	}
	return nil
}

func (rc *Receiver) checkOne(id string, body []byte) error {
	want, ok := Posted{}, false
	if rc.Ledger != nil {
		want, ok = rc.Ledger.Get(id)
	}
	if !ok && rc.Expect != nil {
		want, ok = rc.Expect(id)
		want.ID = id
	}
	if !ok {
		return fmt.Errorf("webhook-id %s was never posted: %s", id, truncateBody(body))
	}
	return CheckBody(want, body)
}

// jsonEqual reports whether a and b are the same JSON value: objects with
// the same members in any order, numbers as written.
func jsonEqual(a, b []byte) bool {
	va, erra := decodeValue(a)
	vb, errb := decodeValue(b)
	return erra == nil && errb == nil && reflect.DeepEqual(va, vb)
}

func decodeValue(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one value")
	}
	return v, nil
}

func truncateBody(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// Envelope returns the body the operator delivers for p: {"type",
// "timestamp", "data"}, the timestamp p's in RFC 3339 UTC with
// milliseconds, or now when p has none. Tests use it to show that their
// receiver's check fails on a body that is not what was posted.
func Envelope(p Posted) []byte {
	ts := time.Now()
	if p.Timestamp != "" {
		if t, err := time.Parse(time.RFC3339Nano, p.Timestamp); err == nil {
			ts = t
		}
	}
	b, err := json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{p.Type, ts.UTC().Format("2006-01-02T15:04:05.000Z07:00"), p.Data})
	if err != nil {
		panic(fmt.Sprintf("Envelope: %v", err))
	}
	return b
}

// SendSigned posts body to url the way the operator delivers it: under
// webhook-id id, signed now with secret by the official library. It
// returns the answer's status.
func SendSigned(url, secret, id string, body []byte) (int, error) {
	wh, err := officialWebhook(secret)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	sig, err := wh.Sign(id, now, body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
	req.Header.Set("webhook-signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }() // read to the end: nothing left to fail
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
