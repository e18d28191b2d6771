package ingest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	clocktesting "k8s.io/utils/clock/testing"
	ctrlfake "sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// liveServer is a Server listening on loopback with a KubeAuthenticator
// whose reviews go to a fakeAPIServer.
type liveServer struct {
	*testServer
	api   *fakeAPIServer
	auth  *KubeAuthenticator
	clock *clocktesting.FakeClock
	base  string
}

// startLiveServer starts a Server on 127.0.0.1 whose authenticator has
// these options and a fake clock, and reviews tokens with a fake API server
// that knows saToken (allowed in namespace "a").
func startLiveServer(t *testing.T, opts KubeAuthOptions, mutate ...func(*Options)) *liveServer {
	t.Helper()
	api := newFakeAPIServer(t)
	api.users[saToken] = authenticationv1.UserInfo{Username: "system:serviceaccount:a:app"}
	api.audiences[saToken] = []string{TokenAudience}
	api.allowed["system:serviceaccount:a:app/a"] = true
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	auth := newKubeAuthenticator(api.clientset(t, 1000, 1000), ctrlfake.NewClientBuilder().Build(), opts, clk, maxCachedDecisions)
	ts := newTestServer(t, append([]func(*Options){func(o *Options) { o.Auth = auth }}, mutate...)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		if ts.Addr() == "" {
			return fmt.Errorf("not listening yet")
		}
		return nil
	})
	return &liveServer{testServer: ts, api: api, auth: auth, clock: clk, base: "http://" + ts.Addr()}
}

// clientFrom returns an HTTP client whose connections come from the
// loopback address ip, such as "127.0.0.2".
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// answer is a response of the live server.
type answer struct {
	status     int
	retryAfter string
	code       string
	message    string
}

// post posts validEvent with token into namespace.
func (s *liveServer) post(t *testing.T, c *http.Client, token, namespace string) answer {
	t.Helper()
	return s.postBody(t, c, token, namespace, "application/json", strings.NewReader(validEvent), -1)
}

func (s *liveServer) postBody(t *testing.T, c *http.Client, token, namespace, contentType string, body io.Reader, contentLength int64) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.base+"/v1/namespaces/"+namespace+"/events", body)
	if err != nil {
		t.Fatal(err)
	}
	if contentLength >= 0 {
		req.ContentLength = contentLength
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("POST: %v", err)
		return answer{}
	}
	defer func() { _ = resp.Body.Close() }()
	a := answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if resp.StatusCode >= 400 {
		var body apiErrorBody
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Errorf("decoding the error body of a %d: %v", resp.StatusCode, err)
		}
		a.code, a.message = body.Error.Code, body.Error.Message
	}
	return a
}

// fakeJWT returns a token shaped like a JWT whose payload has these
// audiences and a random id, so that every call returns another token.
func fakeJWT(audiences ...string) string {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	payload, err := json.Marshal(struct {
		Aud []string `json:"aud"`
		JTI string   `json:"jti"`
		Sub string   `json:"sub"`
	}{audiences, hex.EncodeToString(id), "system:serviceaccount:x:y"})
	if err != nil {
		panic(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString(id)
}

func TestGarbageTokensCauseNoTokenReview(t *testing.T) {
	s := startLiveServer(t, KubeAuthOptions{})
	c := clientFrom(t, "127.0.0.1")
	garbage := func(i int) string {
		b := make([]byte, 16+i%48)
		_, _ = rand.Read(b)
		switch i % 5 {
		case 0:
			return hex.EncodeToString(b) // a guessed static token
		case 1:
			return base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(b) // two segments
		case 2:
			return "a.b.c.d" + hex.EncodeToString(b) // four segments
		case 3:
			return base64.URLEncoding.EncodeToString(b) + ".x=.y" // padding is not base64url of a JWT
		default:
			return "eyJ." + hex.EncodeToString(b) + "." // an empty signature
		}
	}
	var first answer
	for i := range 500 {
		a := s.post(t, c, garbage(i), "a")
		if a.status != http.StatusUnauthorized || a.code != CodeUnauthenticated {
			t.Fatalf("garbage token %d: %+v, want 401 unauthenticated", i, a)
		}
		if i == 0 {
			first = a
		} else if a.message != first.message {
			t.Fatalf("garbage token %d: message %q, differs from %q", i, a.message, first.message)
		}
	}
	if got := s.api.tokenReviews.Load(); got != 0 {
		t.Fatalf("500 garbage tokens caused %d TokenReviews, want 0", got)
	}
	// Garbage used none of the client's budget: a token shaped like a JWT
	// is still reviewed, and refused with the same answer.
	if a := s.post(t, c, fakeJWT(TokenAudience), "a"); a.status != http.StatusUnauthorized || a.message != first.message {
		t.Fatalf("an unknown JWT after the garbage: %+v, want 401 with %q", a, first.message)
	}
	if got := s.api.tokenReviews.Load(); got != 1 {
		t.Fatalf("%d TokenReviews for one unknown JWT, want 1", got)
	}
}

func TestUnknownTokensAreRateLimitedPerClient(t *testing.T) {
	// The default limits; the clock does not move, so no bucket refills
	// unless the test steps it.
	s := startLiveServer(t, KubeAuthOptions{})
	one, two := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2")

	// A real token, reviewed once and then decided from the cache.
	if a := s.post(t, one, saToken, "a"); a.status != http.StatusAccepted {
		t.Fatalf("the ServiceAccount token: %+v, want 202", a)
	}
	var unauthorized, limited int
	for range 100 {
		a := s.post(t, one, fakeJWT(TokenAudience), "a")
		switch a.status {
		case http.StatusUnauthorized:
			unauthorized++
			if limited > 0 {
				t.Fatal("a 401 after a 429: the bucket refilled with a stopped clock")
			}
		case http.StatusTooManyRequests:
			limited++
			if a.code != CodeTooManyRequests || a.retryAfter != "1" || !strings.Contains(a.message, "retry after 1 seconds") || repeatsCode(a.code, a.message) {
				t.Fatalf("429 answer %+v, want code %s, Retry-After 1, a message that does not repeat the code", a, CodeTooManyRequests)
			}
		default:
			t.Fatalf("unknown token: %+v", a)
		}
	}
	// The burst, less the review of the real token.
	if unauthorized != DefaultClientReviewBurst-1 || limited != 100-unauthorized {
		t.Fatalf("%d answers 401 and %d 429, want %d and %d", unauthorized, limited, DefaultClientReviewBurst-1, 100-DefaultClientReviewBurst+1)
	}
	if got := s.api.tokenReviews.Load(); got != DefaultClientReviewBurst {
		t.Fatalf("%d TokenReviews, want %d (the client's burst)", got, DefaultClientReviewBurst)
	}
	// A known token is decided from the cache: never limited.
	if a := s.post(t, one, saToken, "a"); a.status != http.StatusAccepted {
		t.Fatalf("the cached ServiceAccount token over the limit: %+v, want 202", a)
	}
	// Another client address has a bucket of its own.
	if a := s.post(t, two, fakeJWT(TokenAudience), "a"); a.status != http.StatusUnauthorized {
		t.Fatalf("another client: %+v, want 401", a)
	}
	// The bucket refills at the client rate.
	s.clock.Step(time.Second / DefaultClientReviewRate)
	if a := s.post(t, one, fakeJWT(TokenAudience), "a"); a.status != http.StatusUnauthorized {
		t.Fatalf("after the refill of one review: %+v, want 401", a)
	}
	if a := s.post(t, one, fakeJWT(TokenAudience), "a"); a.status != http.StatusTooManyRequests {
		t.Fatalf("after that one review: %+v, want 429", a)
	}
}

func TestUnknownTokensAreRateLimitedOverall(t *testing.T) {
	s := startLiveServer(t, KubeAuthOptions{ReviewRate: 1, ReviewBurst: 3, ClientReviewRate: -1})
	one, two := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2")
	var got []int
	for _, c := range []*http.Client{one, two, one, two, one} {
		got = append(got, s.post(t, c, fakeJWT(TokenAudience), "a").status)
	}
	want := []int{401, 401, 401, 429, 429}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	if n := s.api.tokenReviews.Load(); n != 3 {
		t.Fatalf("%d TokenReviews, want 3 (the overall burst)", n)
	}
}

func TestConcurrentTokenReviewsAreBounded(t *testing.T) {
	s := startLiveServer(t, KubeAuthOptions{MaxConcurrentReviews: 2, ReviewRate: -1, ClientReviewRate: -1})
	s.api.gate = make(chan struct{})
	c := clientFrom(t, "127.0.0.1")
	answers := make(chan answer, 6)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() { answers <- s.post(t, c, fakeJWT(TokenAudience), "a") })
	}
	// Two reviews wait at the gate; the other four are refused at once.
	var limited []answer
	for range 4 {
		select {
		case a := <-answers:
			limited = append(limited, a)
		case <-time.After(20 * time.Second):
			t.Fatalf("only %d answers while two reviews are held", len(limited))
		}
	}
	for _, a := range limited {
		if a.status != http.StatusTooManyRequests || a.retryAfter == "" {
			t.Fatalf("answer while 2 reviews run: %+v, want 429 with Retry-After", a)
		}
	}
	// Both admitted reviews reach the API server before they are let go.
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := s.api.inflight.Load(); n != 2 {
			return fmt.Errorf("%d TokenReviews held, want 2", n)
		}
		return nil
	})
	close(s.api.gate)
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.status != http.StatusUnauthorized {
			t.Fatalf("a held review: %+v, want 401", a)
		}
	}
	if n := s.api.maxInflight.Load(); n != 2 {
		t.Fatalf("%d TokenReviews at once, want 2", n)
	}
}
