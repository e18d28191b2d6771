package ingest

import (
	"net/http"
	"slices"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
)

func TestClaimsAudience(t *testing.T) {
	tests := map[string]struct {
		token string
		want  bool
	}{
		"a list holding the audience":           {fakeJWT("x", TokenAudience), true},
		"a string that is the audience":         {"eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ3ZWJob29rcy53YWJsYXN0LmlvIn0.c2ln", true}, // {"aud":"webhooks.wablast.io"}
		"the API server's audience":             {apiServerToken, false},
		"no aud claim":                          {"eyJhbGciOiJSUzI1NiJ9.e30.c2ln", false}, // {}
		"a payload that is not base64url JSON":  {"eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", false},
		"an audience that only starts the same": {fakeJWT(TokenAudience + ".evil.example"), false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := claimsAudience(tc.token, TokenAudience); got != tc.want {
				t.Fatalf("claimsAudience = %t, want %t", got, tc.want)
			}
		})
	}
}

func TestTokenReviewsAskForTheIngestAudience(t *testing.T) {
	const user = "system:serviceaccount:a:app"
	setup := func(t *testing.T, opts KubeAuthOptions) *liveServer {
		s := startLiveServer(t, opts)
		s.api.mu.Lock()
		defer s.api.mu.Unlock()
		// apiServerToken is a valid token of the same user for the API
		// server's audience; forged claims the ingest audience but the
		// API server issued it for its own.
		s.api.users[apiServerToken] = authenticationv1.UserInfo{Username: user}
		s.api.users[forgedAudienceToken] = authenticationv1.UserInfo{Username: user}
		s.api.audiences[forgedAudienceToken] = []string{apiServerAudience}
		return s
	}

	t.Run("a token for webhooks.wablast.io is reviewed for that audience and accepted", func(t *testing.T) {
		s := setup(t, KubeAuthOptions{})
		c := clientFrom(t, "127.0.0.1")
		if a := s.post(t, c, saToken, "a"); a.status != http.StatusAccepted {
			t.Fatalf("answer %+v, want 202", a)
		}
		s.api.mu.Lock()
		defer s.api.mu.Unlock()
		if len(s.api.reviewAudiences) != 1 || !slices.Equal(s.api.reviewAudiences[0], []string{TokenAudience}) {
			t.Fatalf("TokenReview audiences %q, want one review for [%s]", s.api.reviewAudiences, TokenAudience)
		}
	})
	t.Run("a token for the API server is refused without a review", func(t *testing.T) {
		s := setup(t, KubeAuthOptions{})
		c := clientFrom(t, "127.0.0.1")
		a := s.post(t, c, apiServerToken, "a")
		unknown := s.post(t, c, "not-a-token-at-all-0123456789", "a")
		if a.status != http.StatusUnauthorized || a.message != unknown.message {
			t.Fatalf("answer %+v, want 401 as for an unknown token (%q)", a, unknown.message)
		}
		if n := s.api.tokenReviews.Load(); n != 0 {
			t.Fatalf("%d TokenReviews, want 0", n)
		}
	})
	t.Run("a token claiming webhooks.wablast.io that the API server issued for itself is refused", func(t *testing.T) {
		s := setup(t, KubeAuthOptions{AcceptAPIServerTokens: true})
		c := clientFrom(t, "127.0.0.1")
		if a := s.post(t, c, forgedAudienceToken, "a"); a.status != http.StatusUnauthorized {
			t.Fatalf("answer %+v, want 401", a)
		}
	})
	t.Run("with AcceptAPIServerTokens a token for the API server is reviewed for the API server's audiences and accepted", func(t *testing.T) {
		s := setup(t, KubeAuthOptions{AcceptAPIServerTokens: true})
		c := clientFrom(t, "127.0.0.1")
		if a := s.post(t, c, apiServerToken, "a"); a.status != http.StatusAccepted {
			t.Fatalf("answer %+v, want 202", a)
		}
		if a := s.post(t, c, saToken, "a"); a.status != http.StatusAccepted {
			t.Fatalf("the ingest-audience token: %+v, want 202", a)
		}
		s.api.mu.Lock()
		defer s.api.mu.Unlock()
		want := [][]string{nil, {TokenAudience}}
		if len(s.api.reviewAudiences) != 2 || s.api.reviewAudiences[0] != nil || !slices.Equal(s.api.reviewAudiences[1], want[1]) {
			t.Fatalf("TokenReview audiences %q, want %q", s.api.reviewAudiences, want)
		}
	})
}

// forgedAudienceToken claims TokenAudience:
// {"aud":["webhooks.wablast.io"],"sub":"forged"}.
const forgedAudienceToken = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsid2ViaG9va3Mud2FibGFzdC5pbyJdLCJzdWIiOiJmb3JnZWQifQ.c2ln"
