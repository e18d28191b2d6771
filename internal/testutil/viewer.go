package testutil

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// ViewerConfig returns the rest config and name of a new user who holds, in
// ns, the built-in "view" role and what the operator's manifests aggregate
// into it (config/rbac/webhookconfig_viewer_role.yaml): envtest runs no
// controller manager, so the aggregation is bound directly. It waits until
// the authorizer lets the user list WebhookConfigs.
func (e *Env) ViewerConfig(t testing.TB, ns string) (*rest.Config, string) {
	t.Helper()
	ctx := context.Background()
	data, err := os.ReadFile(filepath.Join(RepoRoot(), "config", "rbac", "webhookconfig_viewer_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(data, &role); err != nil {
		t.Fatal(err)
	}
	role.Name = ns + "-" + role.Name // ClusterRoles are cluster-wide: one per test
	if err := e.Client.Create(ctx, &role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), &role) })
	user := "viewer-" + ns
	for _, r := range []string{"view", role.Name} {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-" + r},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
		}
		if err := e.Client.Create(ctx, rb); err != nil {
			t.Fatal(err)
		}
	}
	u, err := e.Environment.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := u.Config()
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 20*time.Second, func() error {
		return c.List(ctx, &webhooksv1alpha1.WebhookConfigList{}, client.InNamespace(ns))
	})
	return cfg, user
}
