package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/signing"
)

// These tests run the commands against controller-runtime's fake client;
// envtest_test.go runs the built plugin through kubectl against a real API
// server.

// fakeNow is the clock of the fake-client tests; the test token is made from it.
var fakeNow = time.Date(2026, 11, 28, 10, 15, 2, 123456789, time.UTC)

// fakeToken is the test token at fakeNow.
const fakeToken = "2026-11-28T10:15:02.123456789Z"

// result is what one command run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// runPlugin runs the plugin with args in namespace "shop" against c.
func runPlugin(t *testing.T, c client.Client, args ...string) result {
	t.Helper()
	return runPluginArgs(t, c, append(args, "-n", "shop")...)
}

// runPluginArgs runs the plugin with exactly args against c.
func runPluginArgs(t *testing.T, c client.Client, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	o := &options{
		flags:        genericclioptions.NewConfigFlags(false),
		streams:      genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut},
		now:          func() time.Time { return fakeNow },
		pollInterval: 5 * time.Millisecond,
		newClient:    func() (client.Client, error) { return c, nil },
	}
	cmd := newRootCommand(o)
	cmd.SetArgs(args)
	code := Execute(context.Background(), cmd, &errOut)
	return result{stdout: out.String(), stderr: errOut.String(), code: code}
}

// crm is the WebhookConfig "crm" of namespace "shop".
func crm() *webhooksv1alpha1.WebhookConfig {
	return &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "crm", Namespace: "shop"},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:    "https://crm.example.com/hooks/wa",
			Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventMessageSent},
		},
	}
}

// fakeClient returns a fake client holding objs. When operator is not nil it
// plays the operator: after every patch of a WebhookConfig, it passes the
// patched resource's status to operator and writes it back.
func fakeClient(t *testing.T, operator func(*webhooksv1alpha1.WebhookConfig), funcs interceptor.Funcs, objs ...client.Object) client.Client {
	t.Helper()
	if operator != nil {
		funcs.Patch = func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if err := c.Patch(ctx, obj, patch, opts...); err != nil {
				return err
			}
			var whc webhooksv1alpha1.WebhookConfig
			if err := c.Get(ctx, client.ObjectKeyFromObject(obj), &whc); err != nil {
				return err
			}
			operator(&whc)
			return c.Status().Update(ctx, &whc)
		}
	}
	return fake.NewClientBuilder().WithScheme(scheme()).
		WithStatusSubresource(&webhooksv1alpha1.WebhookConfig{}).
		WithInterceptorFuncs(funcs).
		WithObjects(objs...).Build()
}

// forbidden returns the API server's answer to a request RBAC denies.
func forbidden(resource, name string) error {
	return apierrors.NewForbidden(schema.GroupResource{Group: webhooksv1alpha1.GroupVersion.Group, Resource: resource}, name,
		errors.New(`User "alice" cannot patch resource "`+resource+`" in API group "webhooks.wablast.io" in the namespace "shop"`))
}

func TestTestCommand(t *testing.T) {
	answer := func(rec webhooksv1alpha1.TestRecord) func(*webhooksv1alpha1.WebhookConfig) {
		return func(w *webhooksv1alpha1.WebhookConfig) {
			rec.RequestedAt = w.Annotations[webhooksv1alpha1.AnnotationTestRequestedAt]
			w.Status.LastTest = &rec
		}
	}
	tests := []struct {
		name       string
		args       []string
		operator   func(*webhooksv1alpha1.WebhookConfig)
		wantCode   int
		wantStdout []string
		wantStderr string
	}{
		{
			name:       "without --wait the request is made and its token printed",
			args:       []string{"test", "crm"},
			wantStdout: []string{"test delivery requested for webhookconfig/crm (token " + fakeToken + ")\n"},
		},
		{
			name:       "a test the receiver accepted prints the outcome and exits 0",
			args:       []string{"test", "crm", "--wait"},
			operator:   answer(webhooksv1alpha1.TestRecord{Result: webhooksv1alpha1.ResultSucceeded, StatusCode: 204, DurationMilliseconds: 87}),
			wantStdout: []string{"Result:       Succeeded\n", "Status code:  204\n", "Duration:     87ms\n"},
		},
		{
			name:       "a test the receiver refused prints the outcome and exits 1 without an error line",
			args:       []string{"test", "crm", "--wait"},
			operator:   answer(webhooksv1alpha1.TestRecord{Result: webhooksv1alpha1.ResultFailed, StatusCode: 500, DurationMilliseconds: 12, Error: "receiver answered 500 Internal Server Error"}),
			wantCode:   1,
			wantStdout: []string{"Result:       Failed\n", "Status code:  500\n", "Error:        receiver answered 500 Internal Server Error\n"},
		},
		{
			name:       "a test that got no response says so",
			args:       []string{"test", "crm", "--wait"},
			operator:   answer(webhooksv1alpha1.TestRecord{Result: webhooksv1alpha1.ResultFailed, Error: "dial tcp 10.0.0.1:443: connect: connection refused"}),
			wantCode:   1,
			wantStdout: []string{"Status code:  none (no response)\n"},
		},
		{
			name: "an operator that answers an older token is not taken for an answer",
			args: []string{"test", "crm", "--wait", "--timeout", "100ms"},
			operator: func(w *webhooksv1alpha1.WebhookConfig) {
				w.Status.LastTest = &webhooksv1alpha1.TestRecord{RequestedAt: "older", Result: webhooksv1alpha1.ResultSucceeded}
			},
			wantCode:   1,
			wantStderr: "error: the operator did not report the test result of webhookconfig/crm within 100ms: check that the manager is running (kubectl get pods -A -l app.kubernetes.io/name=webhook-operator)",
		},
		{
			name:       "no operator means a timeout that says where to look",
			args:       []string{"test", "crm", "--wait", "--timeout", "50ms"},
			wantCode:   1,
			wantStderr: "error: the operator did not report the test result of webhookconfig/crm within 50ms: check that the manager is running",
		},
		{
			name:       "a timeout that is not positive is refused",
			args:       []string{"test", "crm", "--wait", "--timeout", "0s"},
			wantCode:   1,
			wantStderr: "error: --timeout must be positive, got 0s\n",
		},
		{
			name:       "a missing name says how to call the command",
			args:       []string{"test"},
			wantCode:   1,
			wantStderr: "error: a WebhookConfig name is required: kubectl webhook test NAME",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeClient(t, tt.operator, interceptor.Funcs{}, crm())
			got := runPlugin(t, c, tt.args...)
			if got.code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stdout %q, stderr %q)", got.code, tt.wantCode, got.stdout, got.stderr)
			}
			for _, s := range tt.wantStdout {
				if !strings.Contains(got.stdout, s) {
					t.Errorf("stdout %q does not contain %q", got.stdout, s)
				}
			}
			if !strings.HasPrefix(got.stderr, tt.wantStderr) {
				t.Errorf("stderr %q, want it to start with %q", got.stderr, tt.wantStderr)
			}
			if tt.wantStderr == "" && got.stderr != "" {
				t.Errorf("stderr %q, want nothing", got.stderr)
			}
			var whc webhooksv1alpha1.WebhookConfig
			_ = c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "crm"}, &whc)
			if tt.wantCode == 0 && whc.Annotations[webhooksv1alpha1.AnnotationTestRequestedAt] != fakeToken {
				t.Errorf("annotation %s = %q, want %q", webhooksv1alpha1.AnnotationTestRequestedAt,
					whc.Annotations[webhooksv1alpha1.AnnotationTestRequestedAt], fakeToken)
			}
		})
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	denyPatch := interceptor.Funcs{Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
		return forbidden("webhookconfigs", "crm")
	}}
	denySecrets := interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		if _, ok := obj.(*corev1.Secret); ok {
			return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, key.Name, nil)
		}
		return c.Get(ctx, key, obj, opts...)
	}}
	withRef := crm()
	withRef.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: "crm-webhook-secret", Key: "secret"}
	emptyKey := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "crm-webhook-secret", Namespace: "shop"}, Data: map[string][]byte{"other": []byte("x")}}

	tests := []struct {
		name       string
		funcs      interceptor.Funcs
		objs       []client.Object
		args       []string
		wantStderr string
	}{
		{
			name:       "a missing resource is named with the command that lists them",
			args:       []string{"status", "nope"},
			wantStderr: `error: webhookconfig "nope" not found in namespace "shop" (list them with: kubectl get webhookconfigs -n shop)`,
		},
		{
			name:       "test on a missing resource says the same",
			args:       []string{"test", "nope", "--wait"},
			wantStderr: `error: webhookconfig "nope" not found in namespace "shop" (list them with: kubectl get webhookconfigs -n shop)`,
		},
		{
			name:       "a denied patch names the verb and resource that are missing",
			funcs:      denyPatch,
			objs:       []client.Object{crm()},
			args:       []string{"test", "crm"},
			wantStderr: `error: you need patch on webhookconfigs.webhooks.wablast.io in namespace "shop" (check with: kubectl auth can-i patch webhookconfigs.webhooks.wablast.io -n shop)`,
		},
		{
			name:       "a denied replay names patch too",
			funcs:      denyPatch,
			objs:       []client.Object{crm()},
			args:       []string{"replay", "crm", "--since", "1h"},
			wantStderr: `error: you need patch on webhookconfigs.webhooks.wablast.io in namespace "shop"`,
		},
		{
			name:       "a denied Secret read names get on secrets",
			funcs:      denySecrets,
			objs:       []client.Object{withRef},
			args:       []string{"secret", "crm"},
			wantStderr: `error: you need get on secrets in namespace "shop" (check with: kubectl auth can-i get secrets -n shop)`,
		},
		{
			name:       "a missing referenced Secret is named, with the key to create",
			objs:       []client.Object{withRef},
			args:       []string{"secret", "crm"},
			wantStderr: `error: secret "crm-webhook-secret", named by spec.secretRef of webhookconfig/crm, not found in namespace "shop": create it with the signing secret under key "secret"`,
		},
		{
			name:       "a missing generated Secret points at the operator",
			objs:       []client.Object{crm()},
			args:       []string{"secret", "crm"},
			wantStderr: `error: secret "crm-signing" of webhookconfig/crm not found in namespace "shop": the operator generates it, check that the manager is running`,
		},
		{
			name:       "a Secret without the key names the key",
			objs:       []client.Object{withRef, emptyKey},
			args:       []string{"secret", "crm"},
			wantStderr: `error: secret "crm-webhook-secret" in namespace "shop" has no value under key "secret", the key webhookconfig/crm signs with` + "\n",
		},
		{
			name:       "a bad --since says what is accepted",
			objs:       []client.Object{crm()},
			args:       []string{"replay", "crm", "--since", "yesterday"},
			wantStderr: `error: invalid --since "yesterday": want a duration such as 30m, 1h or 2d, or an RFC 3339 time such as 2026-11-28T10:00:00Z`,
		},
		{
			name:       "an unknown flag points at the help",
			args:       []string{"status", "crm", "--bogus"},
			wantStderr: "error: unknown flag: --bogus\nSee 'kubectl webhook status --help' for usage\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runPlugin(t, fakeClient(t, nil, tt.funcs, tt.objs...), tt.args...)
			if got.code == 0 {
				t.Errorf("exit code 0, want non-zero (stdout %q)", got.stdout)
			}
			if !strings.HasPrefix(got.stderr, tt.wantStderr) {
				t.Errorf("stderr:\n%s\nwant it to start with:\n%s", got.stderr, tt.wantStderr)
			}
			if got.stdout != "" {
				t.Errorf("stdout %q, want nothing", got.stdout)
			}
		})
	}
}

func TestSecretCommand(t *testing.T) {
	secret := func(name, value string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Data: map[string][]byte{"secret": []byte(value), "other": []byte("not-this-one")}}
	}
	withRef := crm()
	withRef.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: "crm-webhook-secret"}
	generated := crm()
	generated.Status.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: "crm-signing", Key: "secret"}
	moved := crm()
	moved.Status.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: "elsewhere", Key: "other"}

	tests := []struct {
		name string
		objs []client.Object
		all  bool
		want string
	}{
		{
			name: "status.secretRef is read",
			objs: []client.Object{generated, secret("crm-signing", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")},
			want: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
		},
		{
			name: "status.secretRef wins over the default name and key",
			objs: []client.Object{moved, secret("crm-signing", "wrong-secret-value"), secret("elsewhere", "x")},
			want: "not-this-one\n",
		},
		{
			name: "without status.secretRef, spec.secretRef with the default key is read",
			objs: []client.Object{withRef, secret("crm-webhook-secret", "a-raw-secret-of-16-bytes-or-more")},
			want: "a-raw-secret-of-16-bytes-or-more\n",
		},
		{
			name: "without any secretRef, the generated Secret is read",
			objs: []client.Object{crm(), secret("crm-signing", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")},
			want: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
		},
		{
			name: "a trailing newline in the Secret is not printed twice",
			objs: []client.Object{crm(), secret("crm-signing", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")},
			want: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
		},
		{
			name: "during a rotation only the newest is printed, so $(kubectl webhook secret) is one secret",
			objs: []client.Object{crm(), secret("crm-signing", "whsec_new0000000000000000000000000000 whsec_old0000000000000000000000000000")},
			want: "whsec_new0000000000000000000000000000\n",
		},
		{
			name: "during a rotation written one a line, too",
			objs: []client.Object{crm(), secret("crm-signing", "whsec_new0000000000000000000000000000\nwhsec_old0000000000000000000000000000\n")},
			want: "whsec_new0000000000000000000000000000\n",
		},
		{
			name: "--all prints every secret of a rotation, newest first, one a line",
			objs: []client.Object{crm(), secret("crm-signing", "whsec_new0000000000000000000000000000  whsec_old0000000000000000000000000000\n")},
			all:  true,
			want: "whsec_new0000000000000000000000000000\nwhsec_old0000000000000000000000000000\n",
		},
		{
			name: "--all outside a rotation prints the one secret",
			objs: []client.Object{crm(), secret("crm-signing", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")},
			all:  true,
			want: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"secret", "crm"}
			if tt.all {
				args = append(args, "--all")
			}
			got := runPlugin(t, fakeClient(t, nil, interceptor.Funcs{}, tt.objs...), args...)
			if got.code != 0 || got.stdout != tt.want || got.stderr != "" {
				t.Fatalf("got code %d, stdout %q, stderr %q; want 0, %q, nothing", got.code, got.stdout, got.stderr, tt.want)
			}
		})
	}
}

func TestReplayCommand(t *testing.T) {
	requeue := func(n int64) func(*webhooksv1alpha1.WebhookConfig) {
		return func(w *webhooksv1alpha1.WebhookConfig) {
			w.Status.LastReplay = &webhooksv1alpha1.ReplayRecord{RequestedAt: w.Annotations[webhooksv1alpha1.AnnotationReplaySince], EventsRequeued: n}
		}
	}
	done := crm()
	done.Annotations = map[string]string{webhooksv1alpha1.AnnotationReplaySince: "2026-11-28T09:00:00Z"}
	done.Status.LastReplay = &webhooksv1alpha1.ReplayRecord{RequestedAt: "2026-11-28T09:00:00Z", EventsRequeued: 4}
	pending := crm()
	pending.Annotations = map[string]string{webhooksv1alpha1.AnnotationReplaySince: "2026-11-28T09:00:00Z"}

	tests := []struct {
		name           string
		obj            *webhooksv1alpha1.WebhookConfig
		args           []string
		operator       func(*webhooksv1alpha1.WebhookConfig)
		wantCode       int
		wantStdout     string
		wantStderr     string
		wantAnnotation string
	}{
		{
			name:           "a duration becomes a UTC time to the second",
			obj:            crm(),
			args:           []string{"replay", "crm", "--since", "1h"},
			wantStdout:     "replay of events that failed since 2026-11-28T09:15:02Z requested for webhookconfig/crm\n",
			wantAnnotation: "2026-11-28T09:15:02Z",
		},
		{
			name:           "--wait prints how many events were requeued",
			obj:            crm(),
			args:           []string{"replay", "crm", "--since", "2026-11-28T08:00:00Z", "--wait"},
			operator:       requeue(7),
			wantStdout:     "replay of events that failed since 2026-11-28T08:00:00Z requested for webhookconfig/crm\n7 events requeued for delivery to webhookconfig/crm\n",
			wantAnnotation: "2026-11-28T08:00:00Z",
		},
		{
			name:           "one requeued event is singular",
			obj:            crm(),
			args:           []string{"replay", "crm", "--since", "2d", "--wait"},
			operator:       requeue(1),
			wantStdout:     "1 event requeued for delivery to webhookconfig/crm\n",
			wantAnnotation: "2026-11-26T10:15:02Z",
		},
		{
			name:           "a value the operator already handled is refused with another to use",
			obj:            done,
			args:           []string{"replay", "crm", "--since", "2026-11-28T09:00:00Z"},
			wantCode:       1,
			wantStderr:     "error: a replay since 2026-11-28T09:00:00Z was already done for webhookconfig/crm (4 events requeued) and the operator acts once per value: pass another --since, such as 2026-11-28T08:59:59Z\n",
			wantAnnotation: "2026-11-28T09:00:00Z",
		},
		{
			name:           "a value the operator has not handled yet is waited for",
			obj:            pending,
			args:           []string{"replay", "crm", "--since", "2026-11-28T09:00:00Z", "--wait"},
			operator:       requeue(3),
			wantStdout:     "3 events requeued",
			wantAnnotation: "2026-11-28T09:00:00Z",
		},
		{
			name:       "--since is required",
			obj:        crm(),
			args:       []string{"replay", "crm"},
			wantCode:   1,
			wantStderr: `error: required flag(s) "since" not set`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeClient(t, tt.operator, interceptor.Funcs{}, tt.obj)
			got := runPlugin(t, c, tt.args...)
			if got.code != tt.wantCode || !strings.Contains(got.stdout, tt.wantStdout) || !strings.HasPrefix(got.stderr, tt.wantStderr) {
				t.Fatalf("got code %d, stdout %q, stderr %q; want %d, %q, %q", got.code, got.stdout, got.stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
			var whc webhooksv1alpha1.WebhookConfig
			if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "crm"}, &whc); err != nil {
				t.Fatal(err)
			}
			if a := whc.Annotations[webhooksv1alpha1.AnnotationReplaySince]; a != tt.wantAnnotation {
				t.Errorf("annotation %s = %q, want %q", webhooksv1alpha1.AnnotationReplaySince, a, tt.wantAnnotation)
			}
		})
	}
}

func TestStatusCommand(t *testing.T) {
	whc := healthyWebhookConfig()
	got := runPlugin(t, fakeClient(t, nil, interceptor.Funcs{}, whc), "status", "crm")
	if got.code != 0 || got.stderr != "" {
		t.Fatalf("got code %d, stderr %q", got.code, got.stderr)
	}
	// The fake client keeps times to the second, as the API server does.
	for _, want := range []string{"Namespace:       shop\n", "Sent:                  42\n", "95.2%", "msg_2mXqL0ZzV8w3hJtYc5pRkNf7aBd"} {
		if !strings.Contains(got.stdout, want) {
			t.Errorf("stdout does not contain %q:\n%s", want, got.stdout)
		}
	}
}

func TestEventTypesCommand(t *testing.T) {
	t.Run("every type is listed with its description and an example envelope", func(t *testing.T) {
		got := runPlugin(t, nil, "event-types")
		if got.code != 0 || got.stderr != "" {
			t.Fatalf("got code %d, stderr %q", got.code, got.stderr)
		}
		for _, ct := range catalog.Types() {
			for _, want := range []string{"\n" + ct.Name, ct.Description, `"type": "` + ct.Name + `"`} {
				if !strings.Contains("\n"+got.stdout, want) {
					t.Errorf("output does not contain %q", want)
				}
			}
		}
		if strings.Contains(got.stdout, "Schema of data:") {
			t.Errorf("the list shows schemas; only a single type should")
		}
	})
	t.Run("one type is shown with the schema of its data", func(t *testing.T) {
		got := runPlugin(t, nil, "event-types", "message.failed")
		if got.code != 0 || !strings.HasPrefix(got.stdout, "message.failed\n") || !strings.Contains(got.stdout, "Schema of data:") ||
			strings.Contains(got.stdout, "message.sent\n") {
			t.Fatalf("got code %d, stdout:\n%s", got.code, got.stdout)
		}
	})
	t.Run("-o json is the shape of GET /v1/event-types", func(t *testing.T) {
		got := runPlugin(t, nil, "event-types", "-o", "json")
		var body struct {
			EventTypes []struct {
				Type        string          `json:"type"`
				Description string          `json:"description"`
				Schema      json.RawMessage `json:"schema"`
				Example     json.RawMessage `json:"example"`
			} `json:"eventTypes"`
		}
		if err := json.Unmarshal([]byte(got.stdout), &body); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, got.stdout)
		}
		if len(body.EventTypes) != len(catalog.Types()) {
			t.Fatalf("%d types, want %d", len(body.EventTypes), len(catalog.Types()))
		}
		for _, et := range body.EventTypes {
			if et.Type == "" || et.Description == "" || len(et.Schema) == 0 || len(et.Example) == 0 {
				t.Errorf("incomplete entry %+v", et)
			}
		}
	})
	t.Run("an unknown type lists the known ones", func(t *testing.T) {
		got := runPlugin(t, nil, "event-types", "message.read")
		if got.code != 1 || !strings.HasPrefix(got.stderr, `error: unknown event type "message.read": the types are message.sent, message.delivered,`) {
			t.Fatalf("got code %d, stderr %q", got.code, got.stderr)
		}
	})
}

func TestNameCompletion(t *testing.T) {
	other := crm()
	other.Name, other.Namespace = "billing", "elsewhere"
	second := crm()
	second.Name = "warehouse"
	c := fakeClient(t, nil, interceptor.Funcs{}, crm(), second, other)
	for _, command := range []string{"test", "status", "secret", "replay"} {
		t.Run(command+" completes the WebhookConfigs of the namespace", func(t *testing.T) {
			got := runPluginArgs(t, c, "__complete", command, "-n", "shop", "")
			if !strings.Contains(got.stdout, "crm\nwarehouse\n:4\n") || strings.Contains(got.stdout, "billing") {
				t.Fatalf("completion %q", got.stdout)
			}
		})
	}
}

func TestRotateSecretCommand(t *testing.T) {
	// endAfter is fakeNow plus d, rounded up to the whole second the annotation holds.
	endAfter := func(d time.Duration) string {
		at := fakeNow.Add(d).UTC()
		if t := at.Truncate(time.Second); !t.Equal(at) {
			at = t.Add(time.Second)
		}
		return at.Format(time.RFC3339)
	}
	const old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	signingSecret := func(value string, annotations map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "crm-signing", Namespace: "shop", Annotations: annotations},
			Data: map[string][]byte{"secret": []byte(value)}}
	}
	read := func(t *testing.T, c client.Client) *corev1.Secret {
		t.Helper()
		var s corev1.Secret
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "crm-signing"}, &s); err != nil {
			t.Fatal(err)
		}
		return &s
	}
	for _, tc := range []struct {
		name    string
		args    []string
		before  string
		wantEnd string // the annotation; "" for none
	}{
		{name: "the default grace is 24 hours", args: nil, before: old, wantEnd: endAfter(24 * time.Hour)},
		{name: "--grace sets it", args: []string{"--grace", "90m"}, before: old, wantEnd: endAfter(90 * time.Minute)},
		{name: "a second rotation keeps only the current secret beside the new one", args: nil, before: old + "\nwhsec_older000000000000000000000000000", wantEnd: endAfter(24 * time.Hour)},
		{name: "--grace 0 replaces the secret at once", args: []string{"--grace", "0"}, before: old},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeClient(t, nil, interceptor.Funcs{}, crm(), signingSecret(tc.before, map[string]string{"keep": "me"}))
			got := runPlugin(t, c, append([]string{"rotate-secret", "crm"}, tc.args...)...)
			if got.code != 0 || got.stderr != "" || !strings.HasPrefix(got.stdout, "secret/crm-signing rotated: ") {
				t.Fatalf("code %d, stdout %q, stderr %q", got.code, got.stdout, got.stderr)
			}
			s := read(t, c)
			secrets := strings.Fields(string(s.Data["secret"]))
			if _, err := signing.ParseSecret(secrets[0]); err != nil || !strings.HasPrefix(secrets[0], "whsec_") || secrets[0] == old {
				t.Errorf("the new secret %q is not a new whsec_ secret: %v", secrets[0], err)
			}
			want := 2
			if tc.wantEnd == "" {
				want = 1
			}
			if len(secrets) != want || want == 2 && secrets[1] != old {
				t.Errorf("the Secret holds %d secrets %q, want the new one and %d of the current", len(secrets), secrets, want-1)
			}
			if end := s.Annotations[webhooksv1alpha1.AnnotationRotationEndsAt]; end != tc.wantEnd {
				t.Errorf("rotation ends at %q, want %q", end, tc.wantEnd)
			}
			if s.Annotations["keep"] != "me" {
				t.Error("other annotations were dropped")
			}
			if tc.wantEnd != "" && !strings.Contains(got.stdout, tc.wantEnd) {
				t.Errorf("the output does not say when the grace ends: %q", got.stdout)
			}
			if strings.Contains(got.stdout, secrets[0]) {
				t.Error("the output prints the secret")
			}
			// secret prints the new one; --all both while the grace runs.
			if out := runPlugin(t, c, "secret", "crm"); out.stdout != secrets[0]+"\n" {
				t.Errorf("secret after the rotation printed %q", out.stdout)
			}
			if out := runPlugin(t, c, "secret", "crm", "--all"); out.stdout != strings.Join(secrets, "\n")+"\n" {
				t.Errorf("secret --all during the grace printed %q", out.stdout)
			}
		})
	}
	// Once the grace period ended, --all prints the newest alone: the only one that signs.
	ended := signingSecret("whsec_new0000000000000000000000000000\n"+old,
		map[string]string{webhooksv1alpha1.AnnotationRotationEndsAt: fakeNow.Add(-time.Second).UTC().Format(time.RFC3339)})
	if out := runPlugin(t, fakeClient(t, nil, interceptor.Funcs{}, crm(), ended), "secret", "crm", "--all"); out.stdout != "whsec_new0000000000000000000000000000\n" {
		t.Errorf("secret --all after the grace printed %q", out.stdout)
	}
	if out := runPlugin(t, fakeClient(t, nil, interceptor.Funcs{}, crm()), "rotate-secret", "crm", "--grace", "-1h"); out.code == 0 {
		t.Error("a negative grace was accepted")
	}
}
