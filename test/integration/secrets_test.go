package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/operator/operatortest"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// secretRequests records the requests for Secrets a client sends.
type secretRequests struct {
	mu   sync.Mutex
	reqs []secretRequest
}

type secretRequest struct {
	method, path, accept string
	query                url.Values
}

func (s *secretRequests) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if strings.Contains(r.URL.Path, "/secrets") {
			s.mu.Lock()
			s.reqs = append(s.reqs, secretRequest{method: r.Method, path: r.URL.Path, accept: r.Header.Get("Accept"), query: r.URL.Query()})
			s.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

func (s *secretRequests) all() []secretRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// newSigningSecret returns a fresh whsec_ value and the key it decodes to.
func newSigningSecret(t *testing.T) (string, [][]byte) {
	t.Helper()
	v, err := signing.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := signing.ParseSecrets(v)
	if err != nil {
		t.Fatal(err)
	}
	return v, keys
}

func webhookConfig(ns, name, secretName string) *webhooksv1alpha1.WebhookConfig {
	w := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: webhooksv1alpha1.WebhookConfigSpec{
			URL:    "https://crm.example.com/hooks/" + name,
			Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventTypeAll},
		},
	}
	if secretName != "" {
		w.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: secretName}
	}
	return w
}

func create(t *testing.T, c client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := c.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// TestManagerCachesNoSecretValues: the operator lists and watches Secrets as
// metadata only, reads by name only the Secret a WebhookConfig names, lists
// full Secrets only by the ingest-token label, keeps no annotations of
// Secrets in its cache (kubectl's last-applied-configuration holds the data),
// and still follows a change of a named Secret.
func TestManagerCachesNoSecretValues(t *testing.T) {
	ns := env.Namespace(t)
	const foreignValue = "foreign-value-that-must-not-be-cached"
	first, firstKeys := newSigningSecret(t)
	create(t, env.Client,
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated", Annotations: map[string]string{
				"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"v1","kind":"Secret","stringData":{"password":"` + foreignValue + `"}}`,
			}},
			StringData: map[string]string{"password": foreignValue},
		},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm-secret"}, StringData: map[string]string{"secret": first}},
		webhookConfig(ns, "crm", "crm-secret"),
	)
	createIngestToken(t, ns)

	rec := &secretRequests{}
	rc := rest.CopyConfig(env.Config)
	rc.Wrap(rec.wrap)
	in, err := operatortest.Start(rc, ns, operatortest.Config(t.TempDir()), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{in: in, op: in.Op, writes: in.Writes, t: t}
	t.Cleanup(r.stop)

	waitReady(t, ns, "crm")
	key := types.NamespacedName{Namespace: ns, Name: "crm"}
	waitKeys := func(want [][]byte) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, func() error {
			ep, ok := r.op.Registry.Get(key)
			if !ok {
				return errors.New("crm is not registered")
			}
			if !slices.EqualFunc(ep.Keys, want, bytes.Equal) {
				return errors.New("crm is registered with other keys")
			}
			return nil
		})
	}
	waitKeys(firstKeys)

	// A change of the named Secret reaches the registry: the metadata watch
	// maps it to the WebhookConfig, which reads the new value.
	second, secondKeys := newSigningSecret(t)
	var s corev1.Secret
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "crm-secret"}, &s); err != nil {
		t.Fatal(err)
	}
	s.Data = map[string][]byte{"secret": []byte(second)}
	if err := env.Client.Update(context.Background(), &s); err != nil {
		t.Fatal(err)
	}
	waitKeys(secondKeys)

	// Ingest tokens are still found, by their label.
	if code, body := post(t, r, ns, "application/json", eventJSON("evt_secrets_1")); code != http.StatusAccepted {
		t.Fatalf("POST with the ingest token: %d %s", code, body)
	}

	// The cache holds the unrelated Secret's metadata, without annotations.
	var pom metav1.PartialObjectMetadata
	pom.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	if err := in.Cache.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "unrelated"}, &pom); err != nil {
		t.Fatalf("the unrelated Secret's metadata is not in the cache: %v", err)
	}
	if len(pom.Annotations) != 0 || len(pom.ManagedFields) != 0 {
		t.Errorf("the cache keeps a Secret's annotations (%d) and managedFields (%d), want neither", len(pom.Annotations), len(pom.ManagedFields))
	}

	metadataWatches := 0
	for _, q := range rec.all() {
		desc := fmt.Sprintf("%s %s?%s (Accept %q)", q.method, q.path, q.query.Encode(), q.accept)
		metadataOnly := strings.Contains(q.accept, "as=PartialObjectMetadata")
		switch {
		case q.method != http.MethodGet:
			t.Errorf("the operator wrote a Secret: %s", desc)
		case strings.HasSuffix(q.path, "/secrets"): // a list or a watch
			if metadataOnly {
				if q.query.Get("watch") == "true" {
					metadataWatches++
				}
				continue
			}
			if q.query.Get("watch") == "true" || q.query.Get("labelSelector") != "webhooks.wablast.io/ingest-token=true" {
				t.Errorf("the operator listed or watched Secrets with their values: %s", desc)
			}
		case !strings.HasSuffix(q.path, "/secrets/crm-secret"):
			t.Errorf("the operator read a Secret no WebhookConfig names: %s", desc)
		}
	}
	if metadataWatches == 0 {
		t.Error("no metadata-only watch of Secrets")
	}
}

// helmBinary is $HELM, else bin/helm-v3.22.0 of the repository, else helm
// on PATH.
func helmBinary(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if h := filepath.Join(testutil.RepoRoot(), "bin", "helm-v3.22.0"); fileExists(h) {
		return h
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	t.Fatal("no helm: set HELM, run 'make helm', or put helm on PATH")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// renderChart runs `helm template` of the chart as release in namespace ns,
// for Kubernetes 1.37, and returns its objects.
func renderChart(t *testing.T, release, ns string, args ...string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command(helmBinary(t), append([]string{"template", release, filepath.Join(testutil.RepoRoot(), "charts", "webhook-operator"),
		"--namespace", ns, "--kube-version", testutil.EnvtestK8sVersion}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v: %s", err, stderr.String())
	}
	return decodeObjects(t, out)
}

// renderKustomize runs `kubectl kustomize` of config/<dir> and returns its
// objects, as `kubectl apply -k config/<dir>` would create them.
func renderKustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	cmd := exec.Command("kubectl", "kustomize", filepath.Join(testutil.RepoRoot(), "config", dir))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/%s: %v: %s", dir, err, stderr.String())
	}
	return decodeObjects(t, out)
}

// decodeObjects decodes a stream of YAML documents.
func decodeObjects(t *testing.T, out []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs
			}
			t.Fatalf("decoding rendered manifests: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, &u)
		}
	}
}

// applyKinds creates the objects of these kinds, and deletes the
// cluster-scoped ones at cleanup.
func applyKinds(t *testing.T, objs []*unstructured.Unstructured, kinds ...string) {
	t.Helper()
	for _, o := range objs {
		if !slices.Contains(kinds, o.GetKind()) {
			continue
		}
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if o.GetNamespace() == "" {
			t.Cleanup(func() { _ = env.Client.Delete(context.Background(), o) })
		}
	}
}

func kindsOf(objs []*unstructured.Unstructured) map[string][]string {
	m := map[string][]string{}
	for _, o := range objs {
		m[o.GetKind()] = append(m[o.GetKind()], o.GetNamespace()+"/"+o.GetName())
	}
	return m
}

// asServiceAccount is env.Config impersonating the ServiceAccount ns/name.
func asServiceAccount(ns, name string) *rest.Config {
	rc := rest.CopyConfig(env.Config)
	rc.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	return rc
}

// TestSecretPolicyLimitsTheManagersSecrets applies the ValidatingAdmissionPolicy
// of the chart and of the kustomize install: the manager's ServiceAccount,
// which RBAC lets create any Secret, may create an Opaque Secret with the
// managed-by label, and nothing else; other users are not affected.
func TestSecretPolicyLimitsTheManagersSecrets(t *testing.T) {
	t.Run("chart", func(t *testing.T) {
		releaseNS := env.Namespace(t)
		release := releaseNS // cluster-scoped names unique per test
		objs := renderChart(t, release, releaseNS, "--show-only", "templates/secretpolicy.yaml")
		checkSecretPolicy(t, objs, releaseNS, release+"-webhook-operator")
	})
	t.Run("kustomize", func(t *testing.T) {
		// The names kustomize gives (namespace and namePrefix of
		// config/default) reach the CEL expression through replacements.
		var policy []*unstructured.Unstructured
		for _, o := range renderKustomize(t, "default") {
			if strings.HasPrefix(o.GetKind(), "ValidatingAdmissionPolicy") {
				policy = append(policy, o)
			}
		}
		checkSecretPolicy(t, policy, "webhook-operator-system", "webhook-operator-controller-manager")
	})
}

// checkSecretPolicy applies the policy and its binding in objs and checks
// what they let the ServiceAccount saNS/sa create.
func checkSecretPolicy(t *testing.T, objs []*unstructured.Unstructured, saNS, sa string) {
	t.Helper()
	target := env.Namespace(t)
	if k := kindsOf(objs); len(k["ValidatingAdmissionPolicy"]) != 1 || len(k["ValidatingAdmissionPolicyBinding"]) != 1 {
		t.Fatalf("rendered %v, want one ValidatingAdmissionPolicy and its binding", k)
	}
	applyKinds(t, objs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")

	create(t, env.Client,
		rbacRole{ns: target, name: "secret-creator"}.role(),
		rbacRole{ns: target, name: "secret-creator"}.binding(saNS, sa),
	)
	manager, err := client.New(asServiceAccount(saNS, sa), client.Options{Scheme: testutil.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tokenSecret := func(name string) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: target, Name: name, Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
			Type:       corev1.SecretTypeServiceAccountToken,
		}
	}
	managed := map[string]string{"app.kubernetes.io/managed-by": "webhook-operator"}

	// The policy takes effect once the API server has loaded it: until then
	// a token Secret goes through, and is removed again.
	testutil.Eventually(t, 30*time.Second, func() error {
		err := manager.Create(ctx, tokenSecret("minted"))
		switch {
		case err == nil:
			_ = env.Client.Delete(ctx, tokenSecret("minted"))
			return errors.New("the manager created a service-account-token Secret (policy not in force yet?)")
		case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "only Opaque Secrets"):
			return nil
		default:
			return fmt.Errorf("creating a token Secret as the manager: %w", err)
		}
	})
	// Also with the label.
	labelled := tokenSecret("minted-labelled")
	labelled.Labels = managed
	if err := manager.Create(ctx, labelled); !apierrors.IsForbidden(err) {
		t.Errorf("labelled service-account-token Secret as the manager: %v, want forbidden", err)
	}
	// An Opaque Secret without the label is refused.
	if err := manager.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: target, Name: "unlabelled"},
		StringData: map[string]string{"secret": "x"}}); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "managed-by") {
		t.Errorf("unlabelled Opaque Secret as the manager: %v, want forbidden naming the label", err)
	}
	// What the manager creates, an Opaque Secret with the label, is allowed.
	if err := manager.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: target, Name: "crm-signing", Labels: managed},
		Type: corev1.SecretTypeOpaque, StringData: map[string]string{"secret": "x"}}); err != nil {
		t.Errorf("labelled Opaque Secret as the manager: %v, want allowed", err)
	}
	// Anyone else is not affected.
	if err := env.Client.Create(ctx, tokenSecret("by-admin")); err != nil {
		t.Errorf("token Secret as the admin: %v, want allowed", err)
	}
}

// rbacRole is a Role that may create Secrets, and its binding.
type rbacRole struct{ ns, name string }

func (r rbacRole) role() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
		"metadata": map[string]any{"namespace": r.ns, "name": r.name},
		"rules":    []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"secrets"}, "verbs": []any{"create"}}},
	}}
}

func (r rbacRole) binding(saNS, sa string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
		"metadata": map[string]any{"namespace": r.ns, "name": r.name},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": r.name},
		"subjects": []any{map[string]any{"kind": "ServiceAccount", "namespace": saNS, "name": sa}},
	}}
}

// TestNamespaceScopedInstall renders the namespace-scoped install of the
// chart (watchNamespaces) and of kustomize (config/namespaced), applies its
// RBAC (no ClusterRoleBinding but system:auth-delegator's), and runs the
// operator as its ServiceAccount with --watch-namespaces: WebhookConfigs in
// the watched namespace are reconciled (one with a generated Secret too),
// those elsewhere are not, and events for other namespaces are refused.
func TestNamespaceScopedInstall(t *testing.T) {
	t.Run("chart", func(t *testing.T) {
		releaseNS, nsA, nsB := env.Namespace(t), env.Namespace(t), env.Namespace(t)
		release := releaseNS
		objs := renderChart(t, release, releaseNS, "--set", "watchNamespaces={"+nsA+"}",
			"--set", "rbac.eventProducer.create=false", "--set", "rbac.aggregateToDefaultRoles=false")
		kinds := kindsOf(objs)
		if len(kinds["ClusterRole"]) != 0 {
			t.Errorf("with watchNamespaces the chart renders ClusterRoles %v, want none", kinds["ClusterRole"])
		}
		if !slices.Contains(kinds["Role"], nsA+"/"+release+"-webhook-operator-manager") {
			t.Errorf("Roles %v, want %s-webhook-operator-manager in %s", kinds["Role"], release, nsA)
		}
		checkOnlyAuthDelegatorClusterWide(t, objs)
		applyKinds(t, objs, "Role", "RoleBinding", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
		checkNamespaceScoped(t, releaseNS, release+"-webhook-operator", nsA, nsB)
	})
	t.Run("kustomize", func(t *testing.T) {
		const saNS, sa = "webhook-operator-system", "webhook-operator-controller-manager"
		nsA, nsB := env.Namespace(t), env.Namespace(t)
		objs := renderKustomize(t, "namespaced")
		checkOnlyAuthDelegatorClusterWide(t, objs)
		var apply []*unstructured.Unstructured
		for _, o := range objs {
			switch {
			case o.GetKind() == "StatefulSet":
				c, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				args, _, _ := unstructured.NestedStringSlice(c[0].(map[string]any), "args")
				if !slices.Contains(args, "--watch-namespaces=shop") {
					t.Errorf("the manager's args %v lack --watch-namespaces=shop", args)
				}
			case o.GetKind() == "RoleBinding" && o.GetNamespace() == "shop":
				// The overlay's example namespace, moved to this test's.
				o.SetNamespace(nsA)
				apply = append(apply, o)
			case o.GetKind() == "ClusterRoleBinding",
				o.GetKind() == "ClusterRole" && o.GetName() == "webhook-operator-manager-role":
				apply = append(apply, o)
			}
		}
		if k := kindsOf(apply); len(k["RoleBinding"]) != 1 || len(k["ClusterRole"]) != 1 || len(k["ClusterRoleBinding"]) != 1 {
			t.Fatalf("config/namespaced renders %v, want the manager's ClusterRole, a RoleBinding of it in shop and one ClusterRoleBinding", k)
		}
		applyKinds(t, apply, "ClusterRole", "RoleBinding", "ClusterRoleBinding")
		checkNamespaceScoped(t, saNS, sa, nsA, nsB)
	})
}

// checkOnlyAuthDelegatorClusterWide fails unless every ClusterRoleBinding
// in objs binds system:auth-delegator.
func checkOnlyAuthDelegatorClusterWide(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "ClusterRoleBinding" {
			if ref, _, _ := unstructured.NestedString(o.Object, "roleRef", "name"); ref != "system:auth-delegator" {
				t.Errorf("ClusterRoleBinding %s binds %q, want only system:auth-delegator", o.GetName(), ref)
			}
		}
	}
}

// checkNamespaceScoped runs the operator as saNS/sa serving nsA only, with
// the RBAC under test applied, and checks what it serves.
func checkNamespaceScoped(t *testing.T, saNS, sa, nsA, nsB string) {
	t.Helper()
	value, keys := newSigningSecret(t)
	create(t, env.Client,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "crm-secret"}, StringData: map[string]string{"secret": value}},
		webhookConfig(nsA, "crm", "crm-secret"),
		webhookConfig(nsA, "generated", ""),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nsB, Name: "crm-secret"}, StringData: map[string]string{"secret": value}},
		webhookConfig(nsB, "crm", "crm-secret"),
	)
	createIngestToken(t, nsA)

	cfg := operatortest.Config(t.TempDir())
	cfg.WatchNamespaces = []string{nsA}
	in, err := operatortest.Start(asServiceAccount(saNS, sa), "", cfg, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{in: in, op: in.Op, writes: in.Writes, t: t}
	t.Cleanup(r.stop)

	// The registry was rebuilt from every WebhookConfig in the cache before
	// Start returned: nsB's, valid and enabled, would be in it.
	if _, ok := r.op.Registry.Get(types.NamespacedName{Namespace: nsB, Name: "crm"}); ok {
		t.Errorf("the WebhookConfig in %s (not watched) is registered", nsB)
	}
	if ep, ok := r.op.Registry.Get(types.NamespacedName{Namespace: nsA, Name: "crm"}); !ok || !slices.EqualFunc(ep.Keys, keys, bytes.Equal) {
		t.Errorf("the WebhookConfig in %s (watched) is not registered with its key", nsA)
	}
	waitReady(t, nsA, "crm")
	waitReady(t, nsA, "generated") // the policy lets the manager create its Secret
	if w := getWHC(t, nsB, "crm"); len(w.Status.Conditions) != 0 || w.Status.ObservedGeneration > 0 {
		t.Errorf("the WebhookConfig in %s (not watched) has status %+v, want none", nsB, w.Status)
	}
	if meta.FindStatusCondition(getWHC(t, nsA, "crm").Status.Conditions, "Ready") == nil {
		t.Error("no Ready condition in the watched namespace")
	}

	if code, body := post(t, r, nsA, "application/json", eventJSON("evt_ns_1")); code != http.StatusAccepted {
		t.Errorf("POST to the watched namespace: %d %s", code, body)
	}
	if code, body := post(t, r, nsB, "application/json", eventJSON("evt_ns_2")); code != http.StatusForbidden {
		t.Errorf("POST to a namespace not watched: %d %s, want 403", code, body)
	}
}
