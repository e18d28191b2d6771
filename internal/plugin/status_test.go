package plugin

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// statusNow is the clock of the rendering tests.
var statusNow = time.Date(2026, 11, 28, 10, 15, 2, 0, time.UTC)

// ago returns the metav1.Time d before statusNow.
func ago(d time.Duration) metav1.Time { return metav1.NewTime(statusNow.Add(-d)) }

// healthyWebhookConfig is a WebhookConfig with every status field set.
func healthyWebhookConfig() *webhooksv1alpha1.WebhookConfig {
	return &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "crm", Namespace: "shop", Generation: 3},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:    "https://crm.example.com/hooks/wa",
			Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventMessageSent, webhooksv1alpha1.EventMessageFailed},
		},
		Status: webhooksv1alpha1.WebhookConfigStatus{
			ObservedGeneration: 3,
			Active:             true,
			SecretRef:          &webhooksv1alpha1.SecretKeyReference{Name: "crm-signing", Key: "secret"},
			Conditions: []metav1.Condition{
				{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Succeeded", Message: "The endpoint is live in the dispatcher", LastTransitionTime: ago(2 * time.Hour)},
				{Type: "Delivering", Status: metav1.ConditionTrue, Reason: "Succeeded", Message: "Recent deliveries succeed", LastTransitionTime: ago(5 * time.Minute)},
			},
			TotalEventsSent:     42,
			EventsDelivered:     40,
			EventsFailed:        2,
			EventsPending:       1,
			SuccessRate:         "95.2%",
			ConsecutiveFailures: 0,
			LastTest: &webhooksv1alpha1.TestRecord{
				RequestedAt: "2026-11-28T10:00:00.000000000Z", Time: ptr.To(ago(15 * time.Minute)),
				Result: webhooksv1alpha1.ResultSucceeded, StatusCode: 200, DurationMilliseconds: 87,
			},
			LastReplay: &webhooksv1alpha1.ReplayRecord{RequestedAt: "2026-11-28T09:00:00Z", Time: ptr.To(ago(time.Hour)), EventsRequeued: 7},
			RecentDeliveries: []webhooksv1alpha1.DeliveryRecord{
				{Time: ago(10 * time.Second), EventID: "msg_2mXqL0ZzV8w3hJtYc5pRkNf7aBd", EventType: "message.sent", Attempt: 1, StatusCode: 200, DurationMilliseconds: 93, Result: webhooksv1alpha1.ResultSucceeded},
				{Time: ago(time.Minute), EventID: "msg_2mXqKzL4p0aQv8Ws1Tt6yHc3nEe", EventType: "message.failed", Attempt: 3, DurationMilliseconds: 10000, Result: webhooksv1alpha1.ResultRetrying, Error: "timeout awaiting response headers"},
			},
		},
	}
}

// healthyStatusOutput is renderStatus's output for healthyWebhookConfig at
// statusNow; docs/kubectl-plugin.md shows the same layout.
const healthyStatusOutput = `Name:            crm
Namespace:       shop
URL:             https://crm.example.com/hooks/wa
Events:          message.sent, message.failed
Enabled:         true
Active:          true
Signing secret:  key "secret" of Secret "crm-signing"
Conditions:
  TYPE        STATUS  REASON     AGE   MESSAGE
  Ready       True    Succeeded  120m  The endpoint is live in the dispatcher
  Delivering  True    Succeeded  5m    Recent deliveries succeed
Deliveries:
  Sent:                  42
  Delivered:             40
  Failed:                2
  Pending:               1
  Success rate (24h):    95.2%
  Consecutive failures:  0
Last test:               Succeeded, HTTP 200, 87ms, 15m ago (token 2026-11-28T10:00:00.000000000Z)
Last replay:             7 events requeued that failed since 2026-11-28T09:00:00Z, 60m ago
Recent deliveries:
  TIME                  EVENT ID                         TYPE            ATTEMPT  CODE  DURATION  RESULT     ERROR
  2026-11-28T10:14:52Z  msg_2mXqL0ZzV8w3hJtYc5pRkNf7aBd  message.sent    1        200   93ms      Succeeded  -
  2026-11-28T10:14:02Z  msg_2mXqKzL4p0aQv8Ws1Tt6yHc3nEe  message.failed  3        -     10000ms   Retrying   timeout awaiting response headers
`

func TestRenderStatusLayout(t *testing.T) {
	var out bytes.Buffer
	if err := renderStatus(&out, healthyWebhookConfig(), nil, nil, statusNow); err != nil {
		t.Fatalf("renderStatus: %v", err)
	}
	if got := out.String(); got != healthyStatusOutput {
		t.Fatalf("renderStatus wrote:\n%s\nwant:\n%s", got, healthyStatusOutput)
	}
}

func TestRenderStatus(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*webhooksv1alpha1.WebhookConfig)
		want    []string // regular expressions, each matching one line
		notWant []string
	}{
		{
			name: "a healthy endpoint shows its identity, conditions and counters",
			want: []string{
				`^Name:\s+crm$`, `^Namespace:\s+shop$`, `^URL:\s+https://crm\.example\.com/hooks/wa$`,
				`^Events:\s+message\.sent, message\.failed$`, `^Enabled:\s+true$`, `^Active:\s+true$`,
				`^Signing secret:\s+key "secret" of Secret "crm-signing"$`,
				`^  TYPE\s+STATUS\s+REASON\s+AGE\s+MESSAGE$`,
				`^  Ready\s+True\s+Succeeded\s+120m\s+The endpoint is live in the dispatcher$`,
				`^  Delivering\s+True\s+Succeeded\s+5m\s+Recent deliveries succeed$`,
				`^  Sent:\s+42$`, `^  Delivered:\s+40$`, `^  Failed:\s+2$`, `^  Pending:\s+1$`,
				`^  Success rate \(24h\):\s+95\.2%$`, `^  Consecutive failures:\s+0$`,
			},
			notWant: []string{`^Note:`},
		},
		{
			name: "the last test and the last replay are summarised on one line each",
			want: []string{
				`^Last test:\s+Succeeded, HTTP 200, 87ms, 15m ago \(token 2026-11-28T10:00:00\.000000000Z\)$`,
				`^Last replay:\s+7 events requeued that failed since 2026-11-28T09:00:00Z, 60m ago$`,
			},
		},
		{
			name: "recent deliveries are a table, newest first, with a dash for a missing code",
			want: []string{
				`^  TIME\s+EVENT ID\s+TYPE\s+ATTEMPT\s+CODE\s+DURATION\s+RESULT\s+ERROR$`,
				`^  2026-11-28T10:14:52Z\s+msg_2mXqL0ZzV8w3hJtYc5pRkNf7aBd\s+message\.sent\s+1\s+200\s+93ms\s+Succeeded\s+-$`,
				`^  2026-11-28T10:14:02Z\s+msg_2mXqKzL4p0aQv8Ws1Tt6yHc3nEe\s+message\.failed\s+3\s+-\s+10000ms\s+Retrying\s+timeout awaiting response headers$`,
			},
		},
		{
			name: "a failed test shows the missing status code and the error",
			mutate: func(w *webhooksv1alpha1.WebhookConfig) {
				w.Status.LastTest = &webhooksv1alpha1.TestRecord{RequestedAt: "t1", Result: webhooksv1alpha1.ResultFailed, DurationMilliseconds: 3, Error: "dial tcp: connection refused"}
			},
			want: []string{`^Last test:\s+Failed, HTTP -, 3ms: dial tcp: connection refused \(token t1\)$`},
		},
		{
			name: "one event requeued is singular",
			mutate: func(w *webhooksv1alpha1.WebhookConfig) {
				w.Status.LastReplay = &webhooksv1alpha1.ReplayRecord{RequestedAt: "2026-11-28T09:00:00Z", EventsRequeued: 1}
			},
			want: []string{`^Last replay:\s+1 event requeued that failed since 2026-11-28T09:00:00Z$`},
		},
		{
			name: "a long error with line breaks stays on its row, cut short",
			mutate: func(w *webhooksv1alpha1.WebhookConfig) {
				w.Status.RecentDeliveries[0].Error = "receiver answered 500:\n\t" + strings.Repeat("x", 200)
			},
			want: []string{`^  2026-11-28T10:14:52Z\s.*\sreceiver answered 500: x+\.\.\.$`},
		},
		{
			name: "a resource the operator has not reconciled says so and shows zero counters",
			mutate: func(w *webhooksv1alpha1.WebhookConfig) {
				w.Status = webhooksv1alpha1.WebhookConfigStatus{ObservedGeneration: -1}
				w.Generation = 1
			},
			want: []string{
				`^Active:\s+false$`,
				`^Conditions:\s+<none> \(the operator has not reconciled this resource: check that the manager is running`,
				`^  Sent:\s+0$`, `^  Success rate \(24h\):\s+-$`,
				`^Recent deliveries:\s+<none>$`,
			},
			notWant: []string{`^Last test:`, `^Last replay:`, `^Signing secret:`, `^  TIME`, `^Note:`},
		},
		{
			name: "a status older than the spec says the operator has not caught up",
			mutate: func(w *webhooksv1alpha1.WebhookConfig) {
				w.Generation = 4
			},
			want: []string{`^Note:\s+status describes generation 3, the spec is at generation 4: the operator has not caught up yet$`},
		},
		{
			name: "a disabled endpoint subscribed to every type says both",
			mutate: func(w *webhooksv1alpha1.WebhookConfig) {
				w.Spec.Enabled = ptr.To(false)
				w.Spec.Events = []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll}
				w.Status.Active = false
			},
			want: []string{`^Events:\s+\* \(every type\)$`, `^Enabled:\s+false$`, `^Active:\s+false$`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			whc := healthyWebhookConfig()
			if tt.mutate != nil {
				tt.mutate(whc)
			}
			var out bytes.Buffer
			if err := renderStatus(&out, whc, nil, nil, statusNow); err != nil {
				t.Fatalf("renderStatus: %v", err)
			}
			lines := strings.Split(out.String(), "\n")
			for _, re := range tt.want {
				if !anyLineMatches(lines, re) {
					t.Errorf("no line matches %q in:\n%s", re, out.String())
				}
			}
			for _, re := range tt.notWant {
				if anyLineMatches(lines, re) {
					t.Errorf("a line matches %q in:\n%s", re, out.String())
				}
			}
		})
	}
}

func anyLineMatches(lines []string, expr string) bool {
	re := regexp.MustCompile(expr)
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
