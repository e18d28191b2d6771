package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// These tests run the built plugin the way users do, as "kubectl webhook
// ...", through kubectl's plugin discovery, against a real API server. No
// operator runs: where one would answer, the test writes the status itself.

// kubectlWebhook runs "kubectl webhook ARGS --kubeconfig KUBECONFIG" with
// the test's plugin binary first on PATH. kubectl refuses flags before a
// plugin's name, so --kubeconfig goes last. It fails only if kubectl could
// not be run; a non-zero exit is part of the result.
func kubectlWebhook(ctx context.Context, kubeconfig string, args ...string) (result, error) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		return result{}, fmt.Errorf("kubectl not found on PATH: %w", err)
	}
	cmd := exec.CommandContext(ctx, kubectl, append(append([]string{"webhook"}, args...), "--kubeconfig", kubeconfig)...)
	cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	case err != nil:
		return res, fmt.Errorf("running kubectl webhook %s: %w", strings.Join(args, " "), err)
	}
	return res, nil
}

// mustRun is kubectlWebhook for the test goroutine.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := kubectlWebhook(ctx, env.Kubeconfig, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// createWebhookConfig creates WebhookConfig name in ns, with spec.secretRef
// naming secretName unless it is empty.
func createWebhookConfig(t *testing.T, ns, name, secretName string) {
	t.Helper()
	whc := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:    "https://crm.example.com/hooks/wa",
			Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventMessageSent, webhooksv1alpha1.EventMessageFailed},
		},
	}
	if secretName != "" {
		whc.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: secretName}
	}
	if err := env.Client.Create(context.Background(), whc); err != nil {
		t.Fatalf("creating WebhookConfig %s: %v", name, err)
	}
}

// writeStatus changes the status of WebhookConfig name as the operator would.
func writeStatus(t *testing.T, ns, name string, change func(*webhooksv1alpha1.WebhookConfigStatus)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var whc webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &whc); err != nil {
			return err
		}
		change(&whc.Status)
		return env.Client.Status().Update(context.Background(), &whc)
	})
	if err != nil {
		t.Fatalf("writing the status of %s: %v", name, err)
	}
}

// waitForAnnotation waits until accept returns true for the value of
// annotation on WebhookConfig name, and returns that value.
func waitForAnnotation(t *testing.T, ns, name, annotation string, accept func(string) bool) string {
	t.Helper()
	var value string
	testutil.Eventually(t, 20*time.Second, func() error {
		var whc webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &whc); err != nil {
			return err
		}
		if value = whc.Annotations[annotation]; !accept(value) {
			return fmt.Errorf("annotation %s is %q", annotation, value)
		}
		return nil
	})
	return value
}

func TestEnvtestTestCommand(t *testing.T) {
	ns := env.Namespace(t)
	createWebhookConfig(t, ns, "crm", "")

	tests := []struct {
		name       string
		timeout    string
		answer     *webhooksv1alpha1.TestRecord // nil: nobody answers
		wantCode   int                          // -1: any non-zero code
		wantStdout string
		wantStderr string
	}{
		{
			name:       "a test the receiver accepted prints Succeeded and exits 0",
			timeout:    "20s",
			answer:     &webhooksv1alpha1.TestRecord{Result: webhooksv1alpha1.ResultSucceeded, StatusCode: 200, DurationMilliseconds: 87},
			wantStdout: "Succeeded",
		},
		{
			name:    "a test the receiver refused prints its status code and exits 1",
			timeout: "20s",
			answer: &webhooksv1alpha1.TestRecord{Result: webhooksv1alpha1.ResultFailed, StatusCode: 500, DurationMilliseconds: 12,
				Error: "receiver answered 500 Internal Server Error"},
			wantCode:   1,
			wantStdout: "500",
		},
		{
			name:       "a test nobody answers times out and says to check the manager",
			timeout:    "2s",
			wantCode:   -1,
			wantStderr: "error: the operator did not report the test result of webhookconfig/crm within 2s: check that the manager is running (kubectl get pods",
		},
	}
	previous := ""
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			started := time.Now()
			done := make(chan result, 1)
			errs := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				res, err := kubectlWebhook(ctx, env.Kubeconfig, "test", "crm", "--wait", "--timeout", tt.timeout, "-n", ns)
				done <- res
				errs <- err
			}()

			token := waitForAnnotation(t, ns, "crm", webhooksv1alpha1.AnnotationTestRequestedAt,
				func(v string) bool { return v != "" && v != previous })
			previous = token
			at, err := time.Parse(tokenLayout, token)
			if err != nil || at.Before(started.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
				t.Errorf("token %q is not the RFC 3339 nanosecond time of the request (%v)", token, err)
			}
			if tt.answer != nil {
				writeStatus(t, ns, "crm", func(st *webhooksv1alpha1.WebhookConfigStatus) {
					rec := *tt.answer
					rec.RequestedAt = token
					rec.Time = ptr.To(metav1.Now())
					st.LastTest = &rec
				})
			}

			res := <-done
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			if (tt.wantCode == -1 && res.code == 0) || (tt.wantCode != -1 && res.code != tt.wantCode) {
				t.Errorf("exit code %d, want %d", res.code, tt.wantCode)
			}
			if !strings.Contains(res.stdout, tt.wantStdout) || !strings.Contains(res.stderr, tt.wantStderr) {
				t.Errorf("stdout:\n%s\nstderr:\n%s\nwant stdout to contain %q and stderr %q", res.stdout, res.stderr, tt.wantStdout, tt.wantStderr)
			}
			if tt.wantStderr == "" && res.stderr != "" {
				t.Errorf("stderr %q, want nothing", res.stderr)
			}
			if want := "test delivery requested for webhookconfig/crm (token " + token + ")\n"; !strings.HasPrefix(res.stdout, want) {
				t.Errorf("stdout %q does not start with %q", res.stdout, want)
			}
		})
	}
}

func TestEnvtestStatusCommand(t *testing.T) {
	ns := env.Namespace(t)
	createWebhookConfig(t, ns, "crm", "")
	now := metav1.Now()
	writeStatus(t, ns, "crm", func(st *webhooksv1alpha1.WebhookConfigStatus) {
		st.ObservedGeneration = 1
		st.Active = true
		st.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: "crm-signing", Key: "secret"}
		st.Conditions = []metav1.Condition{
			{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Succeeded", Message: "The endpoint is live in the dispatcher", LastTransitionTime: now},
			{Type: "Delivering", Status: metav1.ConditionFalse, Reason: "DeliveryFailing", Message: "2 consecutive attempts failed", LastTransitionTime: now},
		}
		st.TotalEventsSent, st.EventsDelivered, st.EventsFailed, st.EventsPending = 42, 40, 2, 0
		st.SuccessRate = "95.2%"
		st.ConsecutiveFailures = 2
		st.RecentDeliveries = []webhooksv1alpha1.DeliveryRecord{{
			Time: now, EventID: "msg_2mXqL0ZzV8w3hJtYc5pRkNf7aBd", EventType: "message.failed", Attempt: 2,
			StatusCode: 503, DurationMilliseconds: 41, Result: webhooksv1alpha1.ResultRetrying, Error: "receiver answered 503",
		}}
	})
	want := []string{
		`^Name:\s+crm$`, `^Namespace:\s+` + ns + `$`, `^Active:\s+true$`,
		`^  Delivering\s+False\s+DeliveryFailing\s+\S+\s+2 consecutive attempts failed$`,
		`^  Sent:\s+42$`, `^  Delivered:\s+40$`, `^  Failed:\s+2$`, `^  Success rate \(24h\):\s+95\.2%$`, `^  Consecutive failures:\s+2$`,
		`^  \S+\s+msg_2mXqL0ZzV8w3hJtYc5pRkNf7aBd\s+message\.failed\s+2\s+503\s+41ms\s+Retrying\s+receiver answered 503$`,
	}
	check := func(t *testing.T, res result) {
		t.Helper()
		if res.code != 0 || res.stderr != "" {
			t.Fatalf("exit code %d, stderr %q", res.code, res.stderr)
		}
		for _, re := range want {
			if !anyLineMatches(strings.Split(res.stdout, "\n"), re) {
				t.Errorf("no line matches %q in:\n%s", re, res.stdout)
			}
		}
	}

	t.Run("-n selects the namespace", func(t *testing.T) {
		check(t, mustRun(t, "status", "crm", "-n", ns))
	})
	t.Run("without -n the kubeconfig context's namespace is used", func(t *testing.T) {
		cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Contexts[cfg.CurrentContext].Namespace = ns
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		res, err := kubectlWebhook(ctx, path, "status", "crm")
		if err != nil {
			t.Fatal(err)
		}
		check(t, res)
	})
}

func TestEnvtestSecretCommand(t *testing.T) {
	ns := env.Namespace(t)
	const value = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	createWebhookConfig(t, ns, "crm", "crm-webhook-secret")
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "crm-webhook-secret", Namespace: ns},
		StringData: map[string]string{"secret": value},
	}
	if err := env.Client.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	createWebhookConfig(t, ns, "lost", "")

	t.Run("the signing secret is printed alone, for $(kubectl webhook secret crm)", func(t *testing.T) {
		res := mustRun(t, "secret", "crm", "-n", ns)
		if res.code != 0 || res.stdout != value+"\n" || res.stderr != "" {
			t.Fatalf("got code %d, stdout %q, stderr %q; want 0, %q, nothing", res.code, res.stdout, res.stderr, value+"\n")
		}
	})
	t.Run("a missing generated Secret is named", func(t *testing.T) {
		res := mustRun(t, "secret", "lost", "-n", ns)
		want := fmt.Sprintf("error: secret \"lost-signing\" of webhookconfig/lost not found in namespace %q", ns)
		if res.code == 0 || res.stdout != "" || !strings.HasPrefix(res.stderr, want) {
			t.Fatalf("got code %d, stdout %q, stderr %q; want an error starting with %q", res.code, res.stdout, res.stderr, want)
		}
	})
}

func TestEnvtestReplayCommand(t *testing.T) {
	ns := env.Namespace(t)
	createWebhookConfig(t, ns, "crm", "")

	t.Run("--since 1h asks for a replay since an hour ago", func(t *testing.T) {
		before := time.Now().Add(-time.Hour)
		res := mustRun(t, "replay", "crm", "--since", "1h", "-n", ns)
		after := time.Now().Add(-time.Hour)
		if res.code != 0 || res.stderr != "" {
			t.Fatalf("exit code %d, stderr %q", res.code, res.stderr)
		}
		var whc webhooksv1alpha1.WebhookConfig
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "crm"}, &whc); err != nil {
			t.Fatal(err)
		}
		value := whc.Annotations[webhooksv1alpha1.AnnotationReplaySince]
		since, err := time.Parse(time.RFC3339, value)
		if err != nil || since.Before(before.Add(-time.Second)) || since.After(after) || !strings.HasSuffix(value, "Z") {
			t.Fatalf("annotation %s = %q, want a UTC RFC 3339 time between %s and %s (%v)",
				webhooksv1alpha1.AnnotationReplaySince, value, before.UTC().Format(time.RFC3339), after.UTC().Format(time.RFC3339), err)
		}
		if want := "replay of events that failed since " + value + " requested for webhookconfig/crm\n"; res.stdout != want {
			t.Fatalf("stdout %q, want %q", res.stdout, want)
		}
	})

	t.Run("--wait prints how many events the operator requeued", func(t *testing.T) {
		since := time.Now().Add(-30 * time.Minute).UTC().Format(time.RFC3339)
		done := make(chan result, 1)
		errs := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := kubectlWebhook(ctx, env.Kubeconfig, "replay", "crm", "--since", since, "--wait", "--timeout", "20s", "-n", ns)
			done <- res
			errs <- err
		}()
		waitForAnnotation(t, ns, "crm", webhooksv1alpha1.AnnotationReplaySince, func(v string) bool { return v == since })
		writeStatus(t, ns, "crm", func(st *webhooksv1alpha1.WebhookConfigStatus) {
			st.LastReplay = &webhooksv1alpha1.ReplayRecord{RequestedAt: since, Time: ptr.To(metav1.Now()), EventsRequeued: 5}
		})
		res := <-done
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if res.code != 0 || !strings.HasSuffix(res.stdout, "5 events requeued for delivery to webhookconfig/crm\n") {
			t.Fatalf("got code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
		}
	})
}

func TestEnvtestMissingWebhookConfig(t *testing.T) {
	ns := env.Namespace(t)
	for _, args := range [][]string{{"status", "nope"}, {"test", "nope", "--wait"}, {"secret", "nope"}, {"replay", "nope", "--since", "1h"}} {
		t.Run(args[0]+" names the missing resource and how to list them", func(t *testing.T) {
			res := mustRun(t, append(args, "-n", ns)...)
			want := fmt.Sprintf("error: webhookconfig \"nope\" not found in namespace %q (list them with: kubectl get webhookconfigs -n %s)", ns, ns)
			if res.code == 0 || res.stdout != "" || !strings.HasPrefix(res.stderr, want) {
				t.Fatalf("got code %d, stdout %q, stderr %q; want an error starting with %q", res.code, res.stdout, res.stderr, want)
			}
		})
	}
}

func TestEnvtestForbidden(t *testing.T) {
	ns := env.Namespace(t)
	createWebhookConfig(t, ns, "crm", "crm-webhook-secret")
	ctx := context.Background()
	// alice may read WebhookConfigs in ns, and nothing else.
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "webhookconfig-reader", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{webhooksv1alpha1.GroupVersion.Group}, Resources: []string{"webhookconfigs"}, Verbs: []string{"get", "list", "watch"},
		}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alice", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "alice"}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	user, err := env.Environment.AddUser(envtest.User{Name: "alice"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "test without patch names the missing verb",
			args: []string{"test", "crm"},
			want: fmt.Sprintf("error: you need patch on webhookconfigs.webhooks.wablast.io in namespace %q (check with: kubectl auth can-i patch webhookconfigs.webhooks.wablast.io -n %s)", ns, ns),
		},
		{
			name: "replay without patch names the missing verb",
			args: []string{"replay", "crm", "--since", "1h"},
			want: fmt.Sprintf("error: you need patch on webhookconfigs.webhooks.wablast.io in namespace %q", ns),
		},
		{
			name: "secret without get on Secrets names the missing verb and resource",
			args: []string{"secret", "crm"},
			want: fmt.Sprintf("error: you need get on secrets in namespace %q (check with: kubectl auth can-i get secrets -n %s)", ns, ns),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			res, err := kubectlWebhook(ctx, kubeconfig, append(tt.args, "-n", ns)...)
			if err != nil {
				t.Fatal(err)
			}
			if res.code == 0 || res.stdout != "" || !strings.HasPrefix(res.stderr, tt.want) {
				t.Fatalf("got code %d, stdout %q, stderr %q; want an error starting with %q", res.code, res.stdout, res.stderr, tt.want)
			}
		})
	}
	t.Run("status needs only get on the WebhookConfig", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		res, err := kubectlWebhook(ctx, kubeconfig, "status", "crm", "-n", ns)
		if err != nil || res.code != 0 {
			t.Fatalf("got code %d, stderr %q, err %v", res.code, res.stderr, err)
		}
	})
}
