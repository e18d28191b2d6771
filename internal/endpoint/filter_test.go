package endpoint

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var sentAt = time.Date(2026, 11, 28, 10, 15, 2, 123456789, time.UTC)

func messageSent(data string) FilterEvent {
	return FilterEvent{Type: "message.sent", Timestamp: sentAt, Data: []byte(data)}
}

func TestCompileFilterRefusesBadExpressionsWithTheCompilersMessage(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		want       []string // in the message
	}{
		{"a syntax error", `data.campaignId == "c-42" ||`, []string{"Syntax error", "1:"}},
		{"an unknown variable", `event.type == "message.sent"`, []string{"undeclared reference to 'event'"}},
		{"a type error", `type == 42`, []string{"found no matching overload for '_==_' applied to '(string, int)'"}},
		{"a method that does not exist", `type.startsWith(1)`, []string{"found no matching overload for 'startsWith'"}},
		{"a result that is not a bool", `data.campaignId`, []string{"must evaluate to a bool, not dyn"}},
		{"a string result", `type + "x"`, []string{"must evaluate to a bool, not string"}},
		{"an estimated cost over the limit", `data.items.all(a, data.items.all(b, a == b))`,
			[]string{"estimated worst-case cost", "over the limit of 1000000", "256 KiB"}},
		{"a too long expression", strings.Repeat("true && ", 600) + "true", []string{"longer than 4096"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := CompileFilter("ns", "wh", tc.expr)
			if err == nil {
				t.Fatalf("CompileFilter(%q) compiled; want an error", tc.expr)
			}
			if f != nil {
				t.Errorf("CompileFilter returned a filter with its error")
			}
			if !errors.Is(err, ErrFilterInvalid) {
				t.Errorf("error %v does not wrap ErrFilterInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestFilterMatchesOnTypeDataAndTimestamp(t *testing.T) {
	const data = `{"messageId":"m-1","sessionId":"s-1","to":"+6281234","campaignId":"c-42","count":3,"ratio":0.5,"tags":["vip","id"],"meta":{"region":"jkt"}}`
	for _, tc := range []struct {
		name, expr string
		ev         FilterEvent
		want       bool
	}{
		{"the issue's example, by data", `data.campaignId == "c-42" || type.startsWith("session.")`, messageSent(data), true},
		{"the issue's example, by type", `data.campaignId == "c-42" || type.startsWith("session.")`,
			FilterEvent{Type: "session.connected", Timestamp: sentAt, Data: []byte(`{"sessionId":"s-1","phoneNumber":"+62"}`)}, true},
		{"the issue's example, neither", `data.campaignId == "c-42" || type.startsWith("session.")`, messageSent(`{"messageId":"m","sessionId":"s","to":"+1","campaignId":"c-7"}`), false},
		{"type equality", `type == "message.failed"`, messageSent(data), false},
		{"an integer in data compared with an int", `data.count == 3 && data.count > 2`, messageSent(data), true},
		{"an integer in data in arithmetic", `data.count + 1 == 4`, messageSent(data), true},
		{"a fraction in data", `data.ratio < 1`, messageSent(data), true},
		{"a list in data", `"vip" in data.tags`, messageSent(data), true},
		{"a macro over a list in data", `data.tags.exists(t, t.startsWith("v"))`, messageSent(data), true},
		{"a nested object", `data.meta.region == "jkt"`, messageSent(data), true},
		{"has on a present key", `has(data.campaignId)`, messageSent(data), true},
		{"has on a missing key", `has(data.error)`, messageSent(data), false},
		{"a string extension", `data.to.startsWith("+62") && data.meta.region.upperAscii() == "JKT"`, messageSent(data), true},
		{"a regular expression", `data.to.matches("^\\+62[0-9]+$")`, messageSent(data), true},
		{"the timestamp after a time", `timestamp > timestamp("2026-11-28T10:00:00Z")`, messageSent(data), true},
		{"the timestamp before a time", `timestamp < timestamp("2026-11-28T10:00:00Z")`, messageSent(data), false},
		{"the timestamp's hour in UTC", `timestamp.getHours() == 10`, messageSent(data), true},
		{"the timestamp's hour in a time zone", `timestamp.getHours("Asia/Jakarta") >= 8 && timestamp.getHours("Asia/Jakarta") < 18`, messageSent(data), true},
		{"a docs example: a substring of the error", `type == "message.failed" && data.error.contains("blocked")`,
			FilterEvent{Type: "message.failed", Timestamp: sentAt, Data: []byte(`{"messageId":"m","sessionId":"s","to":"+1","error":"recipient blocked the sender"}`)}, true},
		{"a docs example: a list literal", `has(data.campaignId) && data.campaignId in ["c-42", "c-43"]`, messageSent(data), true},
		{"the timestamp at the envelope's millisecond", `timestamp == timestamp("2026-11-28T10:15:02.123Z")`, messageSent(data), true},
		{"read from the envelope", `data.campaignId == "c-42" && timestamp == timestamp("2026-11-28T10:15:02.123Z")`,
			FilterEvent{Type: "message.sent", Envelope: []byte(`{"type":"message.sent","timestamp":"2026-11-28T10:15:02.123Z","data":` + data + `}`)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := CompileFilter("ns", "match-"+tc.name, tc.expr)
			if err != nil {
				t.Fatalf("CompileFilter(%q): %v", tc.expr, err)
			}
			got, err := f.Evaluate(tc.ev)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			if got != tc.want {
				t.Errorf("%s on %s = %v, want %v", tc.expr, tc.ev.Data, got, tc.want)
			}
			if m := f.Matches(tc.ev); m != tc.want {
				t.Errorf("Matches = %v, want %v", m, tc.want)
			}
		})
	}
}

func TestEvaluationErrorsDoNotMatchAndAreCounted(t *testing.T) {
	f, err := CompileFilter("shop", "crm", `data.campaignId == "c-42"`)
	if err != nil {
		t.Fatal(err)
	}
	// A session event has no campaignId: data.campaignId is an error ("no
	// such key"), which has() would have avoided.
	ev := FilterEvent{Type: "session.connected", Timestamp: sentAt, Data: []byte(`{"sessionId":"s-1","phoneNumber":"+62"}`)}
	if _, err := f.Evaluate(ev); err == nil || !strings.Contains(err.Error(), "no such key: campaignId") {
		t.Fatalf("Evaluate error = %v, want no such key: campaignId", err)
	}
	errs0 := testutil.ToFloat64(filterErrors.WithLabelValues("shop", "crm"))
	not0 := testutil.ToFloat64(filterEvaluations.WithLabelValues("shop", "crm", "not_matched"))
	match0 := testutil.ToFloat64(filterEvaluations.WithLabelValues("shop", "crm", "matched"))

	subs := []Endpoint{{Namespace: "shop", Name: "crm", Filter: f}}
	if got := Matching(subs, ev); len(got) != 0 {
		t.Errorf("Matching kept %v for an event its filter fails on", names(got))
	}
	if got := Matching(subs, messageSent(`{"messageId":"m","sessionId":"s","to":"+1","campaignId":"c-42"}`)); len(got) != 1 {
		t.Errorf("Matching = %v, want [crm]", names(got))
	}
	// Data that does not parse matches no filter and counts as an error.
	if got := Matching(subs, messageSent(`{"campaignId":`)); len(got) != 0 {
		t.Errorf("Matching kept %v for data that does not parse", names(got))
	}
	if d := testutil.ToFloat64(filterErrors.WithLabelValues("shop", "crm")) - errs0; d != 2 {
		t.Errorf("wablast_webhook_filter_errors_total grew by %v, want 2", d)
	}
	if d := testutil.ToFloat64(filterEvaluations.WithLabelValues("shop", "crm", "not_matched")) - not0; d != 2 {
		t.Errorf("not_matched grew by %v, want 2", d)
	}
	if d := testutil.ToFloat64(filterEvaluations.WithLabelValues("shop", "crm", "matched")) - match0; d != 1 {
		t.Errorf("matched grew by %v, want 1", d)
	}

	ForgetFilterMetrics("shop", "crm")
	for _, v := range []*prometheus.CounterVec{filterErrors, filterEvaluations} {
		if n := v.DeletePartialMatch(prometheus.Labels{"namespace": "shop", "name": "crm"}); n != 0 {
			t.Errorf("after ForgetFilterMetrics, %d series of shop/crm were left", n)
		}
	}
}

func TestTheRuntimeCostLimitStopsAnExpensiveEvaluation(t *testing.T) {
	// Within the estimate for 256 KiB of data, over the limit at run time
	// on a larger event (the ingestion API's limit is a flag).
	f, err := CompileFilter("ns", "cost", `data.s.lowerAscii() == "x"`)
	if err != nil {
		t.Fatal(err)
	}
	big := `{"s":"` + strings.Repeat("a", 4<<20) + `"}`
	_, err = f.Evaluate(messageSent(big))
	if err == nil || !strings.Contains(err.Error(), "cost limit exceeded") {
		t.Fatalf("Evaluate error = %v, want the cost limit", err)
	}
	if len(Matching([]Endpoint{{Name: "cost", Filter: f}}, messageSent(big))) != 0 {
		t.Error("an evaluation over the cost limit matched")
	}
}

func TestMatchingKeepsEndpointsWithoutAFilterAndTheOrder(t *testing.T) {
	campaign, err := CompileFilter("ns", "b", `has(data.campaignId) && data.campaignId == "c-42"`)
	if err != nil {
		t.Fatal(err)
	}
	session, err := CompileFilter("ns", "d", `type.startsWith("session.")`)
	if err != nil {
		t.Fatal(err)
	}
	subs := []Endpoint{{Name: "a"}, {Name: "b", Filter: campaign}, {Name: "c"}, {Name: "d", Filter: session}}

	got := Matching(subs, messageSent(`{"messageId":"m","sessionId":"s","to":"+1","campaignId":"c-42"}`))
	if want := "a,b,c"; names(got) != want {
		t.Errorf("Matching = %s, want %s", names(got), want)
	}
	got = Matching(subs, FilterEvent{Type: "session.connected", Timestamp: sentAt, Data: []byte(`{"sessionId":"s","phoneNumber":"+1"}`)})
	if want := "a,c,d"; names(got) != want {
		t.Errorf("Matching = %s, want %s", names(got), want)
	}

	// Without a filter, the data is not read at all: not even parsed.
	plain := []Endpoint{{Name: "a"}, {Name: "c"}}
	got = Matching(plain, FilterEvent{Type: "message.sent", Data: []byte(`not json`)})
	if &got[0] != &plain[0] || len(got) != 2 {
		t.Errorf("Matching without filters did not return its input")
	}
}

func TestEqualComparesTheFilter(t *testing.T) {
	f1, _ := CompileFilter("ns", "a", `type == "message.sent"`)
	f2, _ := CompileFilter("ns", "a", `type == "message.sent"`)
	f3, _ := CompileFilter("ns", "a", `type == "message.failed"`)
	a, b, c, none := Endpoint{Name: "a", Filter: f1}, Endpoint{Name: "a", Filter: f2}, Endpoint{Name: "a", Filter: f3}, Endpoint{Name: "a"}
	if !a.Equal(&b) {
		t.Error("endpoints with the same filter source are not Equal")
	}
	if a.Equal(&c) || a.Equal(&none) || none.Equal(&a) {
		t.Error("endpoints with different filters are Equal")
	}
}

func names(eps []Endpoint) string {
	var n []string
	for _, e := range eps {
		n = append(n, e.Name)
	}
	return strings.Join(n, ",")
}

func BenchmarkMatching(b *testing.B) {
	subs := make([]Endpoint, 100)
	for i := range subs {
		f, err := CompileFilter("ns", "bench", `type.startsWith("message.") && has(data.messageId) && data.to != "ep-`+strings.Repeat("x", i%7)+`"`)
		if err != nil {
			b.Fatal(err)
		}
		subs[i] = Endpoint{Name: "ep", Filter: f}
	}
	ev := messageSent(`{"messageId":"m-000123","sessionId":"s-1","to":"+6281234567","campaignId":"c-42"}`)
	b.ReportAllocs()
	for b.Loop() {
		if len(Matching(subs, ev)) != 100 {
			b.Fatal("not all matched")
		}
	}
}

func TestCountMatchingCountsNothingInTheMetrics(t *testing.T) {
	f, err := CompileFilter("shop", "count", `data.campaignId == "c-42"`)
	if err != nil {
		t.Fatal(err)
	}
	subs := []Endpoint{{Name: "count", Filter: f}, {Name: "plain"}}
	errs0 := testutil.ToFloat64(filterErrors.WithLabelValues("shop", "count"))
	match0 := testutil.ToFloat64(filterEvaluations.WithLabelValues("shop", "count", "matched"))
	if n := CountMatching(subs, messageSent(`{"campaignId":"c-42"}`)); n != 2 {
		t.Errorf("CountMatching = %d, want 2", n)
	}
	if n := CountMatching(subs, messageSent(`{"sessionId":"s"}`)); n != 1 {
		t.Errorf("CountMatching on a failing event = %d, want 1", n)
	}
	if testutil.ToFloat64(filterErrors.WithLabelValues("shop", "count")) != errs0 ||
		testutil.ToFloat64(filterEvaluations.WithLabelValues("shop", "count", "matched")) != match0 {
		t.Error("CountMatching counted in the metrics")
	}
}

// The data as filters read it (celData: Go maps of CEL values) evaluates
// every kind of expression as the plain CEL map (celValue) would.
func TestTheDataAsGoMapsEvaluatesAsACELMap(t *testing.T) {
	raw := `{"messageId":"m-1","to":"+62","n":3,"ratio":0.5,"ok":true,"none":null,` +
		`"error":{"code":7,"detail":{"reason":"blocked"}},"items":["a","b",{"x":1}],"tags":{}}`
	var data map[string]any
	if err := decodeJSON([]byte(raw), &data); err != nil {
		t.Fatal(err)
	}
	for _, expr := range []string{
		`data.messageId == "m-1"`, `has(data.to) && !has(data.from)`, `data.n == 3 && data.n > 2.5`,
		`data.ratio < 1`, `data.ok == true`, `data.none == null`, `data.error.code == 7`,
		`data.error.detail.reason.startsWith("block")`, `has(data.error.detail) && !has(data.error.other)`,
		`data.items.size() == 3 && data.items[0] == "a" && data.items[2].x == 1`,
		`data.items.exists(i, i == "b")`, `"to" in data && !("from" in data)`, `data.size() == 9`,
		`data.error == {"code": 7, "detail": {"reason": "blocked"}}`, `data.tags == {}`, `size(data.tags) == 0`,
		`data.error.detail != {"reason": "x"}`, `data.exists(k, k == "ratio")`, `data.all(k, k.size() >= 1)`,
		`"reason" in data.error.detail`,
		`data.missing == 1`, `data.error.missing.x == 1`,
	} {
		f, err := CompileFilter("shop", "equiv", expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		eval := func(d any) string {
			vars := &filterVars{typ: types.String("message.sent"), data: d, timestamp: types.Timestamp{}, small: true}
			out, _, err := f.prg.Eval(vars)
			if err != nil {
				return "error"
			}
			return fmt.Sprint(out)
		}
		if got, want := eval(celData(data)), eval(celValue(data)); got != want {
			t.Errorf("%s: %s with Go maps, %s with a CEL map", expr, got, want)
		}
		if strings.Contains(expr, "missing") {
			continue
		}
		if got := eval(celData(data)); got != "true" {
			t.Errorf("%s = %s, want true", expr, got)
		}
	}
}
