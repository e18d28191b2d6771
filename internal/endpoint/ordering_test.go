package endpoint

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func envelope(data string) []byte {
	return []byte(`{"type":"x","timestamp":"2026-12-08T10:00:00.123Z","data":` + data + `}`)
}

func TestTheDefaultOrderingKeyIsTheMessageSessionOrCampaign(t *testing.T) {
	k, err := CompileOrderingKey("shop", "default-key", "")
	if err != nil {
		t.Fatal(err)
	}
	if k.Source() != DefaultOrderingKey {
		t.Errorf("source %q", k.Source())
	}
	for data, want := range map[string]string{
		`{"messageId":"m-1","sessionId":"s-1","campaignId":"c-1"}`: "m-1",
		`{"sessionId":"s-1","campaignId":"c-1"}`:                   "s-1",
		`{"campaignId":"c-1"}`:                                     "c-1",
		`{"messageId":42}`:                                         "42",
	} {
		got, err := k.Key("message.sent", envelope(data))
		if err != nil || got != want {
			t.Errorf("key of %s = %q, %v; want %q", data, got, err, want)
		}
	}
	before := testutil.ToFloat64(orderingKeyErrors.WithLabelValues("shop", "default-key"))
	for _, data := range []string{`{"to":"+62"}`, `{"messageId":{"a":1}}`} {
		got, err := k.Key("message.sent", envelope(data))
		if err == nil || got != "" {
			t.Errorf("key of %s = %q, %v; want an error and the empty key", data, got, err)
		}
	}
	if after := testutil.ToFloat64(orderingKeyErrors.WithLabelValues("shop", "default-key")); after-before != 2 {
		t.Errorf("ordering key errors counted %v, want 2", after-before)
	}
}

func TestCompileOrderingKeyRefusesBadExpressions(t *testing.T) {
	for expr, want := range map[string]string{
		`data.messageId +`:                     "Syntax error",
		`data.items`:                           "",
		`[data.messageId]`:                     "must evaluate to a string",
		`type + "/" + string(data.n)`:          "",
		strings.Repeat("a", MaxFilterLength+1): "longer than",
	} {
		_, err := CompileOrderingKey("shop", "k", expr)
		switch {
		case want == "" && err != nil:
			t.Errorf("%q: %v", expr, err)
		case want != "" && (err == nil || !errors.Is(err, ErrOrderingKeyInvalid) || !strings.Contains(err.Error(), want)):
			t.Errorf("%q: error %v, want one with %q", expr, err, want)
		}
	}
	k, err := CompileOrderingKey("shop", "k", `type + "/" + string(data.n)`)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := k.Key("message.sent", envelope(`{"n":7}`)); got != "message.sent/7" {
		t.Errorf("key %q", got)
	}
}
