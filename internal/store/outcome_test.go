package store

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// Outcomes survive their binary encoding field for field, and messages
// written by earlier versions (a JSON array, a single JSON object) still
// decode.
func TestOutcomesEncodingRoundTripsAndReadsOlderMessages(t *testing.T) {
	full := Outcome{
		UID: "uid-crm", Namespace: "shop", Name: "crm.v1", Generation: 7,
		EventID: "msg_1", EventType: "message.failed", Attempt: 3, Attempted: true, StatusCode: 503, DurationMS: 1234,
		Result: webhooksv1alpha1.ResultRetrying, Reason: "DeliveryFailing", Error: "receiver answered 503 Service Unavailable é",
		Gone: true, Time: time.Date(2026, 11, 29, 1, 2, 3, 456789012, time.UTC),
		NextAttempt: time.Date(2026, 11, 29, 1, 2, 13, 0, time.UTC), AcceptedAt: "2026-11-29T01:02:00.1Z",
	}
	bare := Outcome{UID: "uid-crm", Namespace: "shop", Name: "crm.v1", Result: webhooksv1alpha1.ResultFailed, Attempt: -1, DurationMS: -5}
	want := []Outcome{full, bare}
	got, err := DecodeOutcomes(EncodeOutcomes([]*Outcome{&full, &bare}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}

	old, err := json.Marshal([]*Outcome{&full, &bare})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeOutcomes(old); err != nil || len(got) != 2 || !got[0].Time.Equal(full.Time) || got[1].Result != webhooksv1alpha1.ResultFailed {
		t.Errorf("JSON array: %+v, %v", got, err)
	}
	single, err := json.Marshal(&full)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeOutcomes(single); err != nil || len(got) != 1 || got[0].EventID != "msg_1" {
		t.Errorf("JSON object: %+v, %v", got, err)
	}

	enc := EncodeOutcomes([]*Outcome{&full})
	for name, data := range map[string][]byte{
		"truncated":       enc[:len(enc)-1],
		"trailing":        append(slices.Clone(enc), 0),
		"zero count":      {outcomesFormat, 0},
		"huge count":      {outcomesFormat, 0xff, 0xff, 0x03},
		"string too long": {outcomesFormat, 1, 0, 0x7f},
	} {
		if _, err := DecodeOutcomes(data); !errors.Is(err, errBadOutcomes) {
			t.Errorf("%s: %v, want errBadOutcomes", name, err)
		}
	}
}

// A replay's first outcome keeps the time of the failure it replaces
// through the encoding; a format 2 message (written before replays were
// marked) still decodes, and one claiming the mark is malformed.
func TestOutcomesEncodingKeepsTheReplacedFailure(t *testing.T) {
	replay := Outcome{
		UID: "uid-crm", Namespace: "shop", Name: "crm", EventID: "msg_1", Attempt: 1, Attempted: true,
		Result: webhooksv1alpha1.ResultSucceeded, Time: time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC),
		AcceptedAt: "2026-11-29T02:00:00Z", ReplacesFailure: time.Date(2026, 11, 29, 1, 0, 0, 5, time.UTC),
	}
	plain := replay
	plain.ReplacesFailure = time.Time{}
	got, err := DecodeOutcomes(EncodeOutcomes([]*Outcome{&replay, &plain}))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []Outcome{replay, plain}) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, []Outcome{replay, plain})
	}

	v2 := EncodeOutcomes([]*Outcome{&plain})
	v2[0] = outcomesFormatV2
	if got, err := DecodeOutcomes(v2); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], plain) {
		t.Errorf("format 2: %+v, %v", got, err)
	}
	bad := EncodeOutcomes([]*Outcome{&replay})
	bad[0] = outcomesFormatV2
	if _, err := DecodeOutcomes(bad); !errors.Is(err, errBadOutcomes) {
		t.Errorf("format 2 with the replay flag: %v, want errBadOutcomes", err)
	}
}

// A resend's first outcome keeps the time of the success it replaces, in
// format 4; a message without one stays in format 3 (which versions before
// it read), and a format 3 message claiming the mark is malformed.
func TestOutcomesEncodingKeepsTheReplacedSuccess(t *testing.T) {
	resend := Outcome{
		UID: "uid-crm", Namespace: "shop", Name: "crm", EventID: "msg_1", Attempt: 1, Attempted: true,
		Result: webhooksv1alpha1.ResultSucceeded, Time: time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC),
		AcceptedAt: "2026-12-07T02:00:00Z", ReplacesSuccess: time.Date(2026, 12, 7, 1, 0, 0, 7, time.UTC),
	}
	plain := resend
	plain.ReplacesSuccess = time.Time{}
	replay := plain
	replay.ReplacesFailure = time.Date(2026, 12, 7, 0, 30, 0, 0, time.UTC)
	data := EncodeOutcomes([]*Outcome{&resend, &plain, &replay})
	if data[0] != outcomesFormatV4 {
		t.Errorf("format %d, want %d", data[0], outcomesFormatV4)
	}
	got, err := DecodeOutcomes(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []Outcome{resend, plain, replay}) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, []Outcome{resend, plain, replay})
	}
	if v3 := EncodeOutcomes([]*Outcome{&plain, &replay}); v3[0] != outcomesFormat {
		t.Errorf("without a resend: format %d, want %d", v3[0], outcomesFormat)
	}
	bad := EncodeOutcomes([]*Outcome{&resend})
	bad[0] = outcomesFormat
	if _, err := DecodeOutcomes(bad); !errors.Is(err, errBadOutcomes) {
		t.Errorf("format 3 with the resend flag: %v, want errBadOutcomes", err)
	}
}
