package testutil

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const oracleSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// deliver posts body to h as the operator would, signed with secret.
func deliver(t *testing.T, h http.Handler, secret, id string, body string) {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sig, err := wh.Sign(id, now, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(body))
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
}

func TestReceiverTellsContentApart(t *testing.T) {
	posted := Posted{ID: "e1", Type: "message.sent", Data: []byte(`{"a": 1, "b": ["x", {"c": "<&>"}]}`), Timestamp: "2026-11-28T17:15:02.123456+07:00"}
	good := `{"type":"message.sent","timestamp":"2026-11-28T10:15:02.123Z","data":{"b":["x",{"c":"\u003c\u0026\u003e"}],"a":1}}`
	tests := map[string]struct {
		id, body, secret string
		wantErr          string
	}{
		"the posted content, members reordered and escaped, passes": {id: "e1", body: good},
		"other data fails":           {id: "e1", body: strings.Replace(good, `"a":1`, `"a":2`, 1), wantErr: "data"},
		"a number written otherwise": {id: "e1", body: strings.Replace(good, `"a":1`, `"a":1.0`, 1), wantErr: "data"},
		"another type fails":         {id: "e1", body: strings.Replace(good, "message.sent", "message.failed", 1), wantErr: "type"},
		"another timestamp fails":    {id: "e1", body: strings.Replace(good, "02.123Z", "02.124Z", 1), wantErr: "timestamp"},
		"a body that is not JSON":    {id: "e1", body: `{"type":"message.sent","data":ta":{}}`, wantErr: "not the envelope"},
		"an id never posted":         {id: "e2", body: good, wantErr: "never posted"},
		"a bad signature":            {id: "e1", body: good, secret: "whsec_" + strings.Repeat("A", 32), wantErr: "verification"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ledger := NewLedger()
			ledger.Add(posted)
			rc, err := NewReceiver(oracleSecret, ledger)
			if err != nil {
				t.Fatal(err)
			}
			secret := tc.secret
			if secret == "" {
				secret = oracleSecret
			}
			deliver(t, rc, secret, tc.id, tc.body)
			err = rc.Check()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Check = %v, want an error about %q", err, tc.wantErr)
			}
		})
	}
}

func TestReceiverRequiresIdenticalCopiesAndEveryID(t *testing.T) {
	ledger := NewLedger()
	ledger.Add(Posted{ID: "e1", Type: "message.sent", Data: []byte(`{"a":1}`)}, Posted{ID: "e2", Type: "message.sent", Data: []byte(`{}`)})
	rc, err := NewReceiver(oracleSecret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"type":"message.sent","timestamp":"2026-11-28T10:15:02.123Z","data":{"a":1}}`
	deliver(t, rc, oracleSecret, "e1", body)
	if err := rc.Check(); err != nil {
		t.Fatal(err)
	}
	if err := rc.CheckAll([]string{"e1", "e2"}); err == nil || !strings.Contains(err.Error(), "never arrived") {
		t.Fatalf("CheckAll = %v, want e2 missing", err)
	}
	deliver(t, rc, oracleSecret, "e1", strings.Replace(body, "10:15", "10:16", 1))
	if err := rc.Check(); err == nil || !strings.Contains(err.Error(), "different body") {
		t.Fatalf("Check = %v, want a copy that differs", err)
	}
}

func TestVariedEventsRoundTrip(t *testing.T) {
	events := VariedEvents("v", 50)
	seen := map[string]bool{}
	for _, ev := range events {
		if seen[string(ev.Data)] {
			t.Fatalf("data repeats: %s", ev.Data)
		}
		seen[string(ev.Data)] = true
		if strings.Contains(string(ev.JSON(true)), "\n") {
			t.Fatalf("event %s is not one line", ev.ID)
		}
	}
}

func TestSendSignedEnvelopePassesAndAnotherEventsDataFails(t *testing.T) {
	evs := VariedEvents("s", 6)
	evs = append(evs, VariedEvent("s", 6, "message.failed"))
	if evs[6].Type != "message.failed" || evs[6].ID != "s-6" {
		t.Fatalf("VariedEvent with a type: %+v", evs[6])
	}
	ledger := NewLedger()
	ledger.Add(evs...)
	rc, err := NewReceiver(oracleSecret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	for _, ev := range evs {
		if code, err := SendSigned(srv.URL, oracleSecret, ev.ID, Envelope(ev)); err != nil || code != http.StatusNoContent {
			t.Fatalf("SendSigned: %d %v", code, err)
		}
	}
	if err := rc.CheckAll(ledger.IDs()); err != nil {
		t.Fatal(err)
	}
	// Event 1's data under event 0's type and id.
	swapped := evs[0]
	swapped.Data = evs[1].Data
	if _, err := SendSigned(srv.URL, oracleSecret, "s-7", Envelope(swapped)); err != nil {
		t.Fatal(err)
	}
	ledger.Add(Posted{ID: "s-7", Type: evs[0].Type, Data: evs[0].Data})
	if err := rc.Check(); err == nil || !strings.Contains(err.Error(), "data") {
		t.Fatalf("Check = %v, want another event's data refused", err)
	}
}
