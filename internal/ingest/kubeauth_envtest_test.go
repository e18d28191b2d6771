package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// countingConfig returns a copy of the admin config whose clients count
// the TokenReviews they send.
func countingConfig(reviews *atomic.Int32) *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/tokenreviews") {
				reviews.Add(1)
			}
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// createProducerRole creates the ClusterRole of
// config/rbac/event_producer_role.yaml, once per control plane.
func createProducerRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	f, err := os.Open(filepath.Join(testutil.RepoRoot(), "config", "rbac", "event_producer_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var role rbacv1.ClusterRole
	if err := yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(&role); err != nil {
		t.Fatalf("decoding the ClusterRole: %v", err)
	}
	if role.Kind != "ClusterRole" || role.Name != "webhook-operator-event-producer" {
		t.Fatalf("event_producer_role.yaml holds %s %q", role.Kind, role.Name)
	}
	if err := env.Client.Create(context.Background(), &role); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating the ClusterRole: %v", err)
	}
	return &role
}

func TestKubeAuthenticatorWithAnAPIServer(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	nsA, nsB := env.Namespace(t), env.Namespace(t)
	role := createProducerRole(t)

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "wa-blast"}}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "wa-blast-event-producer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: nsA}},
	}
	staticToken := "static-" + strings.Repeat("0123456789", 3)
	static := tokenSecret(nsA, "wa-blast-ingest-token", staticToken)
	for _, obj := range []client.Object{sa, binding, static} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatalf("creating %s: %v", obj.GetName(), err)
		}
	}

	var reviews atomic.Int32
	cs, err := kubernetes.NewForConfig(countingConfig(&reviews))
	if err != nil {
		t.Fatal(err)
	}
	// A token for the ingestion API, as a projected token volume with
	// audience webhooks.wablast.io gets it, and one for the API server.
	requestToken := func(audiences ...string) string {
		t.Helper()
		expiry := int64(600)
		tr, err := cs.CoreV1().ServiceAccounts(nsA).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry, Audiences: audiences},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("requesting a ServiceAccount token for %q: %v", audiences, err)
		}
		return tr.Status.Token
	}
	saToken := requestToken(TokenAudience)
	apiServerToken := requestToken()

	// The RBAC authorizer learns of the RoleBinding through an informer:
	// wait until it allows the ServiceAccount, so that the authenticator
	// below does not cache an early deny.
	testutil.Eventually(t, 30*time.Second, func() error {
		sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   fmt.Sprintf("system:serviceaccount:%s:%s", nsA, sa.Name),
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + nsA, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: nsA, Verb: "create", Group: "webhooks.wablast.io", Resource: "webhookevents",
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if !sar.Status.Allowed {
			return errors.New("the RoleBinding is not in effect yet")
		}
		return nil
	})
	reviews.Store(0)

	auth := NewKubeAuthenticator(cs, env.Client, KubeAuthOptions{CacheTTL: 10 * time.Second})
	ts := newTestServer(t, func(o *Options) { o.Auth = auth })

	tests := []struct {
		name      string
		auth      string
		namespace string
		status    int
		code      string
	}{
		{"a ServiceAccount token bound in its namespace posts", "Bearer " + saToken, nsA, http.StatusAccepted, ""},
		{"a ServiceAccount token for the API server's audience is refused", "Bearer " + apiServerToken, nsA, http.StatusUnauthorized, CodeUnauthenticated},
		{"a ServiceAccount token cannot post in another namespace", "Bearer " + saToken, nsB, http.StatusForbidden, CodeForbidden},
		{"a request without a token is unauthenticated", "-", nsA, http.StatusUnauthorized, CodeUnauthenticated},
		{"a garbage token is unauthenticated", "Bearer garbage-token", nsA, http.StatusUnauthorized, CodeUnauthenticated},
		{"a static token posts in its namespace", "Bearer " + staticToken, nsA, http.StatusAccepted, ""},
		{"a static token cannot post in another namespace, and is told it is not valid", "Bearer " + staticToken, nsB, http.StatusUnauthorized, CodeUnauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := ts.do(t, request{
				path: "/v1/namespaces/" + tc.namespace + "/events", contentType: "application/json",
				body: validEvent, auth: tc.auth,
			})
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tc.status, w.Body)
			}
			if tc.code != "" {
				if body := decodeError(t, w); body.Error.Code != tc.code {
					t.Errorf("code = %q, want %q", body.Error.Code, tc.code)
				}
			}
			if strings.Contains(w.Body.String(), saToken) || strings.Contains(w.Body.String(), apiServerToken) || strings.Contains(w.Body.String(), staticToken) {
				t.Error("the response contains a token")
			}
		})
	}

	t.Run("a second request with the same token does no second TokenReview", func(t *testing.T) {
		before := reviews.Load()
		if before == 0 {
			t.Fatal("no TokenReview was counted for the first requests")
		}
		for range 5 {
			w := ts.do(t, request{path: "/v1/namespaces/" + nsA + "/events", contentType: "application/json", body: validEvent, auth: "Bearer " + saToken})
			if w.Code != http.StatusAccepted {
				t.Fatalf("status = %d; body %s", w.Code, w.Body)
			}
		}
		if after := reviews.Load(); after != before {
			t.Fatalf("%d more TokenReviews for cached requests", after-before)
		}
	})

	t.Run("with --ingest-accept-apiserver-tokens a token for the API server's audience posts", func(t *testing.T) {
		compat := newTestServer(t, func(o *Options) {
			o.Auth = NewKubeAuthenticator(cs, env.Client, KubeAuthOptions{CacheTTL: 10 * time.Second, AcceptAPIServerTokens: true})
		})
		for _, token := range []string{apiServerToken, saToken} {
			w := compat.do(t, request{path: "/v1/namespaces/" + nsA + "/events", contentType: "application/json", body: validEvent, auth: "Bearer " + token})
			if w.Code != http.StatusAccepted {
				t.Fatalf("status = %d, want 202; body %s", w.Code, w.Body)
			}
		}
	})

	t.Run("events are enqueued in the namespace they were posted to", func(t *testing.T) {
		for _, call := range ts.enq.enqueued() {
			if call[0].Namespace != nsA {
				t.Errorf("event enqueued in namespace %q", call[0].Namespace)
			}
		}
	})
}
