package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubectl apply of a manifest with an unknown event type fails with that
// problem alone: no "some validation rules were not checked" from the API
// server (an enum on the event types made it skip every CEL rule), and the
// other rules are still checked beside it.
func TestKubectlApplyOfAnUnknownEventTypeSaysOnlyThat(t *testing.T) {
	ns := env.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	apply := func(events string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "whc.yaml")
		manifest := fmt.Sprintf("apiVersion: webhooks.wablast.io/v1alpha1\nkind: WebhookConfig\nmetadata: {name: crm, namespace: %s}\n"+
			"spec:\n  url: https://crm.example.com/hooks\n  events: %s\n", ns, events)
		if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := env.Kubectl(ctx, "apply", "-f", path)
		if err == nil {
			t.Fatalf("kubectl apply of events %s succeeded:\n%s", events, out)
		}
		return strings.TrimSpace(out)
	}

	out := apply("[message.sent, message.read]")
	want := `The WebhookConfig "crm" is invalid: spec.events[1]: Invalid value: "message.read": unknown event type: the types are ` +
		`message.sent, message.delivered, message.failed, session.connected, session.disconnected, campaign.started, campaign.completed, or "*" for every type`
	if !strings.HasSuffix(out, want) || strings.Contains(out, "not checked") {
		t.Errorf("kubectl apply said:\n%s\nwant it to end with:\n%s", out, want)
	}

	out = apply(`["*", message.read]`)
	if strings.Contains(out, "not checked") || !strings.Contains(out, "unknown event type") || !strings.Contains(out, "cannot be combined with others") {
		t.Errorf("kubectl apply of an unknown type beside \"*\" said:\n%s\nwant both problems and nothing else", out)
	}
}
