package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlfake "sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/wablast/webhook-operator/internal/testutil"
)

const (
	// saToken is shaped like a ServiceAccount token for TokenAudience:
	// {"aud":["webhooks.wablast.io"],"sub":"system:serviceaccount:a:app"}.
	saToken = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsid2ViaG9va3Mud2FibGFzdC5pbyJdLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTphcHAifQ.c2ln"
	// apiServerToken is the same for the API server's audience:
	// {"aud":["https://kubernetes.default.svc"],...}.
	apiServerToken = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjIl0sInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDphOmFwcCJ9.c2ln"
	staticTokenA   = "static-token-of-namespace-a-0123456789"
)

// fakeCluster answers TokenReviews and SubjectAccessReviews from tables and
// counts them.
type fakeCluster struct {
	mu sync.Mutex
	// users maps a token to its user; other tokens are not authenticated.
	users map[string]authenticationv1.UserInfo
	// allowed maps "user/namespace" to true.
	allowed map[string]bool
	// reviewErr, when set, fails every TokenReview.
	reviewErr error
	// delay slows every TokenReview down.
	delay time.Duration
	// audienceUnaware answers as an authenticator that ignores audiences:
	// authenticated without status.audiences.
	audienceUnaware bool

	tokenReviews atomic.Int32
	sars         []authorizationv1.SubjectAccessReviewSpec
}

func (c *fakeCluster) clientset() *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		c.tokenReviews.Add(1)
		time.Sleep(c.delay)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.reviewErr != nil {
			return true, nil, c.reviewErr
		}
		tr := action.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		if user, ok := c.users[tr.Spec.Token]; ok {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: user, Audiences: tr.Spec.Audiences}
			if c.audienceUnaware {
				tr.Status.Audiences = nil
			}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		sar := action.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview).DeepCopy()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.sars = append(c.sars, sar.Spec)
		sar.Status.Allowed = c.allowed[sar.Spec.User+"/"+sar.Spec.ResourceAttributes.Namespace]
		return true, sar, nil
	})
	return cs
}

func tokenSecret(ns, name, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{LabelIngestToken: "true"}},
		Data:       map[string][]byte{IngestTokenKey: []byte(token)},
	}
}

// unlimitedReviews are the options of tests that are not about the limits
// on reviews: a TTL of 10 s and no limits.
var unlimitedReviews = KubeAuthOptions{CacheTTL: 10 * time.Second, MaxConcurrentReviews: -1, ReviewRate: -1, ClientReviewRate: -1}

// unknownJWT is a token shaped like a JWT for TokenAudience that no API
// server knows.
const unknownJWT = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsid2ViaG9va3Mud2FibGFzdC5pbyJdLCJzdWIiOiJ1bmtub3duIn0.c2ln"

type authFixture struct {
	cluster *fakeCluster
	secrets client.Client
	clock   *clocktesting.FakeClock
	auth    *KubeAuthenticator
}

func newAuthFixture(t testing.TB, objs ...client.Object) *authFixture {
	t.Helper()
	f := &authFixture{
		cluster: &fakeCluster{
			users: map[string]authenticationv1.UserInfo{saToken: {
				Username: "system:serviceaccount:a:app",
				UID:      "uid-1",
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:a"},
				Extra:    map[string]authenticationv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"app-0"}},
			}},
			allowed: map[string]bool{"system:serviceaccount:a:app/a": true},
		},
		secrets: ctrlfake.NewClientBuilder().WithObjects(objs...).Build(),
		clock:   clocktesting.NewFakeClock(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)),
	}
	f.auth = newKubeAuthenticator(f.cluster.clientset(), f.secrets, unlimitedReviews, f.clock, maxCachedDecisions)
	return f
}

func TestKubeAuthenticatorDecisions(t *testing.T) {
	tests := map[string]struct {
		token     string
		namespace string
		want      error
		// reviews is the number of TokenReviews expected.
		reviews int32
	}{
		"a ServiceAccount token bound in its namespace is allowed": {
			token: saToken, namespace: "a", want: nil, reviews: 1,
		},
		"a ServiceAccount token is forbidden where it is not bound": {
			token: saToken, namespace: "b", want: ErrForbidden, reviews: 1,
		},
		"a garbage token is unauthenticated without a TokenReview": {
			token: "garbage", namespace: "a", want: ErrUnauthenticated, reviews: 0,
		},
		"an unknown token shaped like a JWT is unauthenticated by a TokenReview": {
			token: unknownJWT, namespace: "a", want: ErrUnauthenticated, reviews: 1,
		},
		"a static token is allowed in its Secret's namespace without a TokenReview": {
			token: staticTokenA, namespace: "a", want: nil, reviews: 0,
		},
		"a static token is unauthenticated in another namespace, as an unknown token is": {
			token: staticTokenA, namespace: "b", want: ErrUnauthenticated, reviews: 0,
		},
		"a static token with surrounding whitespace in the Secret matches": {
			token: "static-token-with-a-newline-000", namespace: "c", want: nil, reviews: 0,
		},
		"a static token shorter than 16 bytes is ignored": {
			token: "short", namespace: "a", want: ErrUnauthenticated, reviews: 0,
		},
		"a static token in a Secret without the label is not a static token": {
			token: "unlabelled-token-0123456789", namespace: "a", want: ErrUnauthenticated, reviews: 0,
		},
		"a static token shared by two namespaces is allowed in both": {
			token: "shared-token-0123456789", namespace: "b", want: nil, reviews: 0,
		},
	}
	unlabelled := tokenSecret("a", "unlabelled", "unlabelled-token-0123456789")
	unlabelled.Labels = nil
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newAuthFixture(t,
				tokenSecret("a", "ingest", staticTokenA),
				tokenSecret("a", "short", "short"),
				tokenSecret("c", "newline", "static-token-with-a-newline-000\n"),
				tokenSecret("a", "shared", "shared-token-0123456789"),
				tokenSecret("b", "shared", "shared-token-0123456789"),
				unlabelled,
			)
			err := f.auth.Authorize(context.Background(), tc.token, tc.namespace)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Authorize = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), tc.token) {
				t.Errorf("the error contains the token: %v", err)
			}
			if got := f.cluster.tokenReviews.Load(); got != tc.reviews {
				t.Errorf("%d TokenReviews, want %d", got, tc.reviews)
			}
		})
	}
}

func TestKubeAuthenticatorAsksForTheRightAccess(t *testing.T) {
	f := newAuthFixture(t)
	if err := f.auth.Authorize(context.Background(), saToken, "a"); err != nil {
		t.Fatal(err)
	}
	if len(f.cluster.sars) != 1 {
		t.Fatalf("%d SubjectAccessReviews", len(f.cluster.sars))
	}
	got := f.cluster.sars[0]
	want := authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:a:app",
		UID:    "uid-1",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:a"},
		Extra:  map[string]authorizationv1.ExtraValue{"authentication.kubernetes.io/pod-name": {"app-0"}},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: "a", Verb: "create", Group: "webhooks.wablast.io", Resource: "webhookevents",
		},
	}
	if fmt.Sprintf("%+v %+v", got, *got.ResourceAttributes) != fmt.Sprintf("%+v %+v", want, *want.ResourceAttributes) {
		t.Errorf("SubjectAccessReview spec = %+v %+v\nwant %+v %+v", got, *got.ResourceAttributes, want, *want.ResourceAttributes)
	}
}

func TestKubeAuthenticatorCache(t *testing.T) {
	ctx := context.Background()
	f := newAuthFixture(t)

	// Allow and deny are cached per (token, namespace) for the TTL.
	for range 3 {
		if err := f.auth.Authorize(ctx, saToken, "a"); err != nil {
			t.Fatal(err)
		}
		if err := f.auth.Authorize(ctx, unknownJWT, "a"); !errors.Is(err, ErrUnauthenticated) {
			t.Fatal(err)
		}
	}
	if got := f.cluster.tokenReviews.Load(); got != 2 {
		t.Fatalf("%d TokenReviews for 2 distinct tokens, want 2", got)
	}
	// Another namespace is another decision.
	if err := f.auth.Authorize(ctx, saToken, "b"); !errors.Is(err, ErrForbidden) {
		t.Fatal(err)
	}
	if got := f.cluster.tokenReviews.Load(); got != 3 {
		t.Fatalf("%d TokenReviews, want 3", got)
	}
	// After the TTL the decision is made again.
	f.clock.Step(10*time.Second + time.Millisecond)
	if err := f.auth.Authorize(ctx, saToken, "a"); err != nil {
		t.Fatal(err)
	}
	if got := f.cluster.tokenReviews.Load(); got != 4 {
		t.Fatalf("%d TokenReviews after the TTL, want 4", got)
	}
}

func TestKubeAuthenticatorDoesNotCacheFailures(t *testing.T) {
	ctx := context.Background()
	f := newAuthFixture(t)
	f.cluster.reviewErr = errors.New("connection refused")
	err := f.auth.Authorize(ctx, saToken, "a")
	if err == nil || errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrForbidden) {
		t.Fatalf("Authorize = %v, want an error that is neither 401 nor 403", err)
	}
	f.cluster.mu.Lock()
	f.cluster.reviewErr = nil
	f.cluster.mu.Unlock()
	if err := f.auth.Authorize(ctx, saToken, "a"); err != nil {
		t.Fatalf("Authorize after recovery = %v", err)
	}
	if got := f.cluster.tokenReviews.Load(); got != 2 {
		t.Fatalf("%d TokenReviews, want 2", got)
	}
}

func TestKubeAuthenticatorDeduplicatesConcurrentReviews(t *testing.T) {
	f := newAuthFixture(t)
	f.cluster.delay = 50 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() { errs <- f.auth.Authorize(context.Background(), saToken, "a") })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := f.cluster.tokenReviews.Load(); got != 1 {
		t.Fatalf("%d TokenReviews for 50 concurrent requests, want 1", got)
	}
}

func TestKubeAuthenticatorSeesNewAndDeletedStaticTokens(t *testing.T) {
	ctx := context.Background()
	f := newAuthFixture(t)
	// The index is built on the first request.
	if err := f.auth.Authorize(ctx, staticTokenA, "a"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Authorize before the Secret exists = %v", err)
	}
	secret := tokenSecret("a", "ingest", staticTokenA)
	if err := f.secrets.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// A token that is not shaped like a JWT is refused without a review,
	// and that refusal is not cached: the new token is found as soon as the
	// index may be rebuilt (a second), though the index is younger than
	// the TTL.
	f.clock.Step(500 * time.Millisecond)
	if err := f.auth.Authorize(ctx, staticTokenA, "a"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Authorize within a second of the index = %v", err)
	}
	f.clock.Step(500 * time.Millisecond)
	if err := f.auth.Authorize(ctx, staticTokenA, "a"); err != nil {
		t.Fatalf("Authorize a second after the index = %v", err)
	}
	if err := f.auth.Authorize(ctx, staticTokenA, "b"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Authorize in another namespace = %v, want unauthenticated", err)
	}
	// A deleted Secret stops working once the decision and the index expire.
	if err := f.secrets.Delete(ctx, secret); err != nil {
		t.Fatal(err)
	}
	f.clock.Step(10*time.Second + time.Millisecond)
	if err := f.auth.Authorize(ctx, staticTokenA, "a"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Authorize after deletion = %v", err)
	}
}

func TestKubeAuthenticatorCacheIsCapped(t *testing.T) {
	ctx := context.Background()
	f := newAuthFixture(t)
	f.auth = newKubeAuthenticator(f.cluster.clientset(), f.secrets, unlimitedReviews, f.clock, 10)
	for i := range 25 {
		_ = f.auth.Authorize(ctx, fmt.Sprintf("%s%d", unknownJWT, i), "a")
		if n := len(f.auth.decisions.Keys()); n > 10 {
			t.Fatalf("%d cached decisions, cap 10", n)
		}
	}
	// The least recently used decisions went: the last 10 tokens are still
	// decided from the cache, the first is reviewed again.
	before := f.cluster.tokenReviews.Load()
	for i := 15; i < 25; i++ {
		_ = f.auth.Authorize(ctx, fmt.Sprintf("%s%d", unknownJWT, i), "a")
	}
	if got := f.cluster.tokenReviews.Load() - before; got != 0 {
		t.Fatalf("%d TokenReviews for the 10 most recent tokens, want 0 (cached)", got)
	}
	_ = f.auth.Authorize(ctx, unknownJWT+"0", "a")
	if got := f.cluster.tokenReviews.Load() - before; got != 1 {
		t.Fatalf("%d TokenReviews for the evicted token, want 1", got)
	}
}

func TestKubeAuthenticatorDecisionOutlivesTheRequestThatStartedIt(t *testing.T) {
	api := newFakeAPIServer(t)
	api.users[saToken] = authenticationv1.UserInfo{Username: "system:serviceaccount:a:app"}
	api.audiences[saToken] = []string{TokenAudience}
	api.allowed["system:serviceaccount:a:app/a"] = true
	api.gate = make(chan struct{})
	auth := newKubeAuthenticator(api.clientset(t, 0, 0), ctrlfake.NewClientBuilder().Build(), unlimitedReviews, clock.RealClock{}, maxCachedDecisions)

	first, cancel := context.WithCancel(context.Background())
	firstDone := make(chan error, 1)
	go func() { firstDone <- auth.Authorize(first, saToken, "a") }()
	testutil.Eventually(t, 5*time.Second, func() error {
		if api.tokenReviews.Load() == 0 {
			return errors.New("no TokenReview yet")
		}
		return nil
	})
	// A second request for the same decision waits for the first's review;
	// then the first request gives up.
	secondDone := make(chan error, 1)
	go func() { secondDone <- auth.Authorize(context.Background(), saToken, "a") }()
	cancel()
	if err := <-firstDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled request got %v, want context.Canceled", err)
	}
	close(api.gate)
	if err := <-secondDone; err != nil {
		t.Fatalf("the waiting request got %v, want the shared decision (allowed)", err)
	}
	if got := api.tokenReviews.Load(); got != 1 {
		t.Fatalf("%d TokenReviews, want 1", got)
	}
}

func TestKubeAuthenticatorRefusesATokenNotReviewedForItsAudience(t *testing.T) {
	f := newAuthFixture(t)
	f.cluster.audienceUnaware = true
	if err := f.auth.Authorize(context.Background(), saToken, "a"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Authorize = %v, want unauthenticated: the review did not confirm the audience", err)
	}
}

// namespaceRecorder records the namespaces static token Secrets are listed in
// ("" for all of them).
type namespaceRecorder struct {
	client.Reader
	mu         sync.Mutex
	namespaces []string
}

func (r *namespaceRecorder) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	r.mu.Lock()
	r.namespaces = append(r.namespaces, lo.Namespace)
	r.mu.Unlock()
	return r.Reader.List(ctx, list, opts...)
}

func TestKubeAuthenticatorLimitedToNamespaces(t *testing.T) {
	ctx := context.Background()
	f := newAuthFixture(t,
		tokenSecret("a", "ingest", staticTokenA),
		tokenSecret("c", "ingest", "static-token-of-namespace-c-0123456789"))
	rec := &namespaceRecorder{Reader: f.secrets}
	f.auth = newKubeAuthenticator(f.cluster.clientset(), rec, unlimitedReviews, f.clock, maxCachedDecisions).LimitToNamespaces([]string{"a", "b"})

	if err := f.auth.Authorize(ctx, staticTokenA, "a"); err != nil {
		t.Fatalf("static token in a served namespace: %v", err)
	}
	// A namespace not served is forbidden before any lookup or review, for
	// every token, valid ones included.
	reviews := f.cluster.tokenReviews.Load()
	for _, tok := range []string{staticTokenA, "static-token-of-namespace-c-0123456789", saToken} {
		if err := f.auth.Authorize(ctx, tok, "c"); !errors.Is(err, ErrForbidden) {
			t.Errorf("token for namespace c (not served) = %v, want forbidden", err)
		}
	}
	if got := f.cluster.tokenReviews.Load(); got != reviews {
		t.Errorf("%d TokenReviews for a namespace not served, want none", got-reviews)
	}
	// The token of namespace c is not known: the lists ran only in a and b.
	if err := f.auth.Authorize(ctx, "static-token-of-namespace-c-0123456789", "b"); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("token of an unserved namespace in b = %v, want unauthenticated (not found)", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ns := range rec.namespaces {
		if ns != "a" && ns != "b" {
			t.Errorf("static token Secrets listed in namespace %q, want only a and b", ns)
		}
	}
	if len(rec.namespaces) == 0 {
		t.Error("no List of static token Secrets")
	}
}
