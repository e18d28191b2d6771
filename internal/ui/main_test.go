package ui

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// These tests run the page's server against a real API server (envtest,
// without the aggregation layer, so the delivery log API is not served) and
// call it over HTTP on loopback as the browser does. No operator runs:
// where one would answer, the test writes the status itself.

var env *testutil.Env

func TestMain(m *testing.M) { os.Exit(testutil.RunTests(m, &env)) }

// testScheme knows what the plugin's client knows.
func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(webhooksv1alpha1.AddToScheme(s))
	utilruntime.Must(deliveryv1alpha1.AddToScheme(s))
	return s
}

// syncBuffer is a bytes.Buffer for a server's error log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a page server serving on loopback for one test, and a browser
// stand-in: an HTTP client with a cookie jar.
type running struct {
	t      *testing.T
	srv    *Server
	base   string // http://127.0.0.1:port
	client *http.Client
	csrf   string
	errLog *syncBuffer
}

// serve starts the page for namespace ns with the credentials of cfg, and
// stops it when the test ends, failing the test unless Serve returns nil
// within a few seconds of its context ending.
func serve(t *testing.T, cfg *rest.Config, ns string) *running {
	t.Helper()
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	errLog := &syncBuffer{}
	srv, err := New(Options{Client: c, Namespace: ns, ErrLog: errLog})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v after its context ended, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of its context ending")
		}
	})
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(srv.URL(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	return &running{t: t, srv: srv, base: "http://" + u.Host, client: &http.Client{Jar: jar, Timeout: 30 * time.Second}, errLog: errLog}
}

// csrfMeta finds the CSRF token in a page.
var csrfMeta = regexp.MustCompile(`<meta name="csrf-token" content="([0-9a-f]+)">`)

// login opens the address with the token, as the user does, and keeps the
// cookie and the page's CSRF token.
func (r *running) login() {
	r.t.Helper()
	code, body := r.get("/?token=" + r.srv.Token())
	if code != http.StatusOK {
		r.t.Fatalf("opening the address with the token: %d %s", code, body)
	}
	m := csrfMeta.FindStringSubmatch(body)
	if m == nil {
		r.t.Fatalf("no CSRF token in the page:\n%s", body)
	}
	r.csrf = m[1]
}

// get sends a GET and returns the status code and body.
func (r *running) get(path string) (int, string) {
	r.t.Helper()
	resp, err := r.client.Get(r.base + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// send sends a change with the page's CSRF token and Origin, with header
// changes applied, and returns the status code and the decoded JSON body.
func (r *running) send(method, path string, body any, change func(http.Header)) (int, map[string]any) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			r.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", r.csrf)
	req.Header.Set("Origin", r.base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	if change != nil {
		change(req.Header)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &out); err != nil {
			r.t.Fatalf("%s %s answered %d with a body that is not JSON: %v\n%s", method, path, resp.StatusCode, err, raw)
		}
	}
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, out
}

// getWHC reads WebhookConfig name of ns as the admin.
func getWHC(t *testing.T, ns, name string) (*webhooksv1alpha1.WebhookConfig, error) {
	t.Helper()
	var whc webhooksv1alpha1.WebhookConfig
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &whc)
	return &whc, err
}

// createWHC creates WebhookConfig name in ns as the admin (not through the
// page), subscribed to message.sent, with spec.secretRef unless secretName
// is empty.
func createWHC(t *testing.T, ns, name, secretName string) {
	t.Helper()
	whc := &webhooksv1alpha1.WebhookConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: webhooksv1alpha1.WebhookConfigSpec{URL: "https://crm.example.com/hooks/wa",
			Events: []webhooksv1alpha1.EventType{webhooksv1alpha1.EventMessageSent}},
	}
	if secretName != "" {
		whc.Spec.SecretRef = &webhooksv1alpha1.SecretKeyReference{Name: secretName}
	}
	if err := env.Client.Create(context.Background(), whc); err != nil {
		t.Fatal(err)
	}
}

// viewerConfig is the rest config and name of a user with only the "view"
// role in ns (testutil.Env.ViewerConfig).
func viewerConfig(t *testing.T, ns string) (*rest.Config, string) {
	t.Helper()
	return env.ViewerConfig(t, ns)
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data string
}

// openStream opens the page's event stream and returns its events as they
// arrive; the stream is closed when the test ends.
func (r *running) openStream() <-chan sseEvent {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/api/watch", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	// No client timeout: the stream stays open.
	resp, err := (&http.Client{Jar: r.client.Jar}).Do(req) //nolint:bodyclose // closed by the goroutine that reads it, or below
	if err != nil {
		cancel()
		r.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		cancel()
		_ = resp.Body.Close()
		r.t.Fatalf("the event stream answered %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan sseEvent, 100)
	go func() {
		defer close(events)
		defer func() { _ = resp.Body.Close() }()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	r.t.Cleanup(cancel)
	return events
}

// eventTimeout bounds the wait for one event of the stream.
const eventTimeout = 20 * time.Second

// next returns the next event of events for which match is true, failing
// the test after eventTimeout.
func next(t *testing.T, events <-chan sseEvent, match func(sseEvent) bool) sseEvent {
	t.Helper()
	deadline := time.After(eventTimeout)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the event stream ended")
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no matching event within %s", eventTimeout)
		}
	}
}

// fieldErrors returns the field errors of an error answer.
func fieldErrors(t *testing.T, body map[string]any) []fieldError {
	t.Helper()
	raw, err := json.Marshal(body["fields"])
	if err != nil {
		t.Fatal(err)
	}
	var out []fieldError
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("fields %s: %v", raw, err)
	}
	return out
}
