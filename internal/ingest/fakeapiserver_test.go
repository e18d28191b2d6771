package ingest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// fakeAPIServer is a Kubernetes API server on loopback that answers
// TokenReviews and SubjectAccessReviews from tables, so that the
// authenticator's client runs over real HTTP (its rate limiter, contexts
// and timeouts included).
type fakeAPIServer struct {
	*httptest.Server

	mu sync.Mutex
	// users maps a token to its user; other tokens are not authenticated.
	users map[string]authenticationv1.UserInfo
	// audiences maps a token to the audiences it was issued for; a token
	// not listed has the API server's own audience, apiServerAudience.
	audiences map[string][]string
	// allowed maps "user/namespace" to true.
	allowed map[string]bool
	// gate, when not nil, holds every TokenReview until it is closed.
	gate chan struct{}

	tokenReviews atomic.Int32
	// reviewAudiences records the spec.audiences of every TokenReview.
	reviewAudiences [][]string
	// inflight and maxInflight count concurrent TokenReviews.
	inflight, maxInflight atomic.Int32
}

// apiServerAudience is the fake API server's own audience, the one of
// tokens issued without audiences.
const apiServerAudience = "https://kubernetes.default.svc"

func newFakeAPIServer(t *testing.T) *fakeAPIServer {
	t.Helper()
	s := &fakeAPIServer{
		users:     map[string]authenticationv1.UserInfo{},
		audiences: map[string][]string{},
		allowed:   map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/tokenreviews", s.tokenReview)
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/subjectaccessreviews", s.subjectAccessReview)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// clientset returns a client of the server with the given rate limit (0:
// client-go's default).
func (s *fakeAPIServer) clientset(t *testing.T, qps float32, burst int) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{
		Host: s.URL, QPS: qps, Burst: burst,
		ContentConfig: rest.ContentConfig{ContentType: "application/json", AcceptContentTypes: "application/json"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func (s *fakeAPIServer) tokenReview(w http.ResponseWriter, r *http.Request) {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxInflight.Load()
		if n <= m || s.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	s.tokenReviews.Add(1)
	var tr authenticationv1.TokenReview
	if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
		http.Error(w, "decoding the TokenReview ("+r.Header.Get("Content-Type")+"): "+err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	gate := s.gate
	s.reviewAudiences = append(s.reviewAudiences, tr.Spec.Audiences)
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	user, ok := s.users[tr.Spec.Token]
	tokenAudiences := s.audiences[tr.Spec.Token]
	s.mu.Unlock()
	if len(tokenAudiences) == 0 {
		tokenAudiences = []string{apiServerAudience}
	}
	// As the API server does: the review's audiences (its own when none
	// are given) must intersect the token's, and status.audiences is the
	// intersection.
	want := tr.Spec.Audiences
	if len(want) == 0 {
		want = []string{apiServerAudience}
	}
	var matched []string
	for _, a := range want {
		if slices.Contains(tokenAudiences, a) {
			matched = append(matched, a)
		}
	}
	if ok && len(matched) > 0 {
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: user, Audiences: matched}
	}
	tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&tr) //nolint:errchkjson // a test server: a failed write fails the client's request
}

func (s *fakeAPIServer) subjectAccessReview(w http.ResponseWriter, r *http.Request) {
	var sar authorizationv1.SubjectAccessReview
	if err := json.NewDecoder(r.Body).Decode(&sar); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	sar.Status.Allowed = sar.Spec.ResourceAttributes != nil && s.allowed[sar.Spec.User+"/"+sar.Spec.ResourceAttributes.Namespace]
	s.mu.Unlock()
	sar.APIVersion, sar.Kind = "authorization.k8s.io/v1", "SubjectAccessReview"
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&sar) //nolint:errchkjson // a test server: a failed write fails the client's request
}
