package ingest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"k8s.io/utils/clock"
	ctrlfake "sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// TestStaticTokenOfAnotherNamespaceLooksUnknown posts, over loopback, a
// static token into a namespace it does not belong to and a token nobody
// issued, and compares the answers byte for byte: the first must not tell
// that the token is valid somewhere.
func TestStaticTokenOfAnotherNamespaceLooksUnknown(t *testing.T) {
	api := newFakeAPIServer(t)
	secrets := ctrlfake.NewClientBuilder().WithObjects(tokenSecret("a", "ingest", staticTokenA)).Build()
	auth := newKubeAuthenticator(api.clientset(t, 0, 0), secrets, KubeAuthOptions{}, clock.RealClock{}, maxCachedDecisions)
	s := startLiveServer(t, KubeAuthOptions{}, func(o *Options) { o.Auth = auth })
	c := clientFrom(t, "127.0.0.1")

	type raw struct {
		status int
		header http.Header
		body   string
	}
	post := func(token, namespace string) raw {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.base+"/v1/namespaces/"+namespace+"/events", strings.NewReader(validEvent))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Header.Del("Date")
		return raw{resp.StatusCode, resp.Header, string(body)}
	}

	if got := post(staticTokenA, "a"); got.status != http.StatusAccepted {
		t.Fatalf("the static token in its namespace: %d %s", got.status, got.body)
	}
	elsewhere := post(staticTokenA, "b")
	unknown := post("static-token-nobody-issued-0123456789", "b")
	if elsewhere.status != http.StatusUnauthorized {
		t.Fatalf("the static token in another namespace: %d %s, want 401", elsewhere.status, elsewhere.body)
	}
	if elsewhere.body != unknown.body {
		t.Fatalf("bodies differ:\nanother namespace: %s\nunknown token:     %s", elsewhere.body, unknown.body)
	}
	for _, h := range []string{"Content-Type", "Content-Length", "WWW-Authenticate", "Retry-After"} {
		if elsewhere.header.Get(h) != unknown.header.Get(h) {
			t.Errorf("header %s differs: %q and %q", h, elsewhere.header.Get(h), unknown.header.Get(h))
		}
	}
	if strings.Contains(elsewhere.body, `"a"`) || strings.Contains(elsewhere.body, "another namespace") {
		t.Errorf("the answer names the token's namespace: %s", elsewhere.body)
	}
}
