package deliverylog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// chartClusterRoles renders the chart's delivery API template and returns its
// ClusterRoles (read, and resend).
func chartClusterRoles(t *testing.T) []rbacv1.ClusterRole {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		helm = filepath.Join(testutil.RepoRoot(), "bin", "helm-v3.22.0")
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(helm, "template", "t", filepath.Join(testutil.RepoRoot(), "charts", "webhook-operator"),
		"--namespace", "wablast", "--show-only", "templates/deliveryapi.yaml")
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm template: %v: %s", err, stderr.String())
	}
	var roles []rbacv1.ClusterRole
	dec := utilyaml.NewYAMLOrJSONDecoder(&out, 4096)
	for {
		var r rbacv1.ClusterRole
		if err := dec.Decode(&r); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if r.Kind == "ClusterRole" {
			roles = append(roles, r)
		}
	}
	return roles
}

// TestViewReadsEditResends: with the chart's ClusterRoles (which aggregate
// into view and edit), a user who may only read the log lists and gets
// deliveries but is refused a resend (403 from the API server, not from the
// manager), and a user who may also resend does, and the receiver gets the
// event again.
func TestViewReadsEditResends(t *testing.T) {
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	rc := newReceiver(t, http.StatusInternalServerError)
	createEndpoint(t, ns, "erp", rc.URL+"/hooks", 1)
	enqueue(t, op, ns, "rbac-1")
	name := deliverylog.Name("erp", "rbac-1")
	waitAttempts(t, ns, name, 1)

	ctx := context.Background()
	var view, resend string
	for _, r := range chartClusterRoles(t) {
		r.Name = ns + "-" + r.Name // one per test: ClusterRoles are cluster-wide
		switch {
		case r.Labels["rbac.authorization.k8s.io/aggregate-to-view"] == "true":
			view = r.Name
		case r.Labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true":
			resend = r.Name
		}
		if err := env.Client.Create(ctx, &r); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), &r) })
	}
	if view == "" || resend == "" {
		t.Fatalf("the chart has no ClusterRole aggregated into view (%q) or edit (%q)", view, resend)
	}

	kubeconfigOf := func(user string, roles ...string) string {
		u, err := env.Environment.AddUser(envtest.User{Name: user}, nil)
		if err != nil {
			t.Fatal(err)
		}
		data, err := u.KubeConfig()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, role := range roles {
			rb := &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
			}
			if err := env.Client.Create(ctx, rb); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}
	viewer := kubeconfigOf("viewer-"+ns, view)
	editor := kubeconfigOf("editor-"+ns, view, resend)
	as := func(kubeconfig string, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		return string(out), err
	}
	body := filepath.Join(t.TempDir(), "resend.json")
	if err := os.WriteFile(body, []byte(`{"apiVersion":"delivery.wablast.io/v1alpha1","kind":"WebhookDeliveryResend"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	resendPath := fmt.Sprintf("/apis/delivery.wablast.io/v1alpha1/namespaces/%s/webhookdeliveries/%s/resend", ns, name)

	// RBAC takes a moment to reach the authorizer's cache.
	testutil.Eventually(t, 20*time.Second, func() error {
		out, err := as(viewer, "get", "whd", "-n", ns)
		if err != nil || !strings.Contains(out, name) {
			return fmt.Errorf("viewer's list: %w: %s", err, out)
		}
		return nil
	})
	if out, err := as(viewer, "get", "whd", "-n", ns, name, "-o", "jsonpath={.spec.eventID}"); err != nil || out != "rbac-1" {
		t.Errorf("viewer's get: %v: %s", err, out)
	}
	if out, err := as(viewer, "get", "whd", "-n", "default"); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("viewer lists another namespace: %v: %s", err, out)
	}
	if out, err := as(viewer, "create", "--raw", resendPath, "-f", body); err == nil || !strings.Contains(out, "Forbidden") {
		t.Errorf("viewer's resend was not refused: %v: %s", err, out)
	}
	rc.mu.Lock()
	delete(rc.bodies, "rbac-1")
	rc.mu.Unlock()
	if out, err := as(editor, "create", "--raw", resendPath, "-f", body); err != nil || !strings.Contains(out, "resentAt") {
		t.Fatalf("editor's resend: %v: %s", err, out)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, ok := rc.body("rbac-1"); !ok {
			return errors.New("the event was not delivered again after the editor's resend")
		}
		return nil
	})
	waitAttempts(t, ns, name, 2)
}
