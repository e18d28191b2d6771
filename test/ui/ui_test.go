//go:build ui

// Package ui drives the page of "kubectl webhook ui" in a real headless
// Chromium (chromedp) against a real control plane (envtest, with the
// aggregation layer for the delivery log API) and the operator's real
// wiring in process (embedded NATS, dispatcher, delivery API), delivering
// to a loopback receiver that verifies every signature. It performs the
// original settings page's acceptance test: open, fill the URL, choose
// events, save, reload, the values are still there; then a test delivery's
// result, the delivery log and a resend, a bad URL refused beside its
// field, and a user with only the "view" role seeing the page read-only.
//
// Screenshots go to $WABLAST_ARTIFACTS (a temporary directory when unset).
// Chromium is Debian's "chromium" package ("make chromium" installs it);
// without it the test fails, it never skips. Run it with "make test-ui".
package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/operator/operatortest"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/testutil"
	"github.com/wablast/webhook-operator/internal/ui"
)

var env *testutil.Env

func TestMain(m *testing.M) {
	e, err := testutil.StartEnvWith(testutil.EnvOptions{InstallCRDs: true, Aggregation: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env = e
	code := m.Run()
	e.Stop()
	os.Exit(code)
}

// chromium returns the browser to drive: $CHROMIUM, else chromium on PATH.
// It fails the test when there is none: a missing browser must not look
// like a pass.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH (nor $CHROMIUM): install it with 'make chromium' (Debian's chromium package)")
	return ""
}

// artifacts is where screenshots go: $WABLAST_ARTIFACTS, else a temporary
// directory of the test.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("WABLAST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(webhooksv1alpha1.AddToScheme(s))
	utilruntime.Must(deliveryv1alpha1.AddToScheme(s))
	return s
}

// startOperator runs the operator for ns with the delivery log and its API
// on, routed through an APIService (operatortest.StartWithDeliveryAPI).
func startOperator(t *testing.T, ns string) *operator.Operator {
	t.Helper()
	return operatortest.StartWithDeliveryAPI(t, env, ns)
}

// received is one request the receiver got.
type received struct {
	id, eventType string
	body          []byte
	err           error // the signature check's
}

// receiver verifies every request's signature with the keys of the Secret
// ns/secretName, read when the first request arrives (the page generates
// the secret), answers 200 when it verifies and 401 otherwise, and keeps
// what arrived.
type receiver struct {
	*httptest.Server
	ns, secretName string

	mu   sync.Mutex
	keys [][]byte
	got  []received
}

func newReceiver(t *testing.T, ns, secretName string) *receiver {
	rc := &receiver{ns: ns, secretName: secretName}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := rc.verify(r.Context(), r.Header, body)
		var env struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(body, &env)
		rc.mu.Lock()
		rc.got = append(rc.got, received{id: r.Header.Get("webhook-id"), eventType: env.Type, body: body, err: err})
		rc.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) verify(ctx context.Context, h http.Header, body []byte) error {
	rc.mu.Lock()
	keys := rc.keys
	rc.mu.Unlock()
	if keys == nil {
		var sec corev1.Secret
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: rc.ns, Name: rc.secretName}, &sec); err != nil {
			return err
		}
		k, err := signing.ParseSecrets(string(sec.Data["secret"]))
		if err != nil {
			return err
		}
		keys = k
		rc.mu.Lock()
		rc.keys = k
		rc.mu.Unlock()
	}
	return (&signing.Verifier{Keys: keys}).Verify(h, body)
}

// requests returns what arrived with webhook-id id, or of eventType when id is empty.
func (rc *receiver) requests(id, eventType string) []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []received
	for _, g := range rc.got {
		if id != "" && g.id == id || id == "" && g.eventType == eventType {
			out = append(out, g)
		}
	}
	return out
}

// page is a page server for one user and a browser tab on it.
type page struct {
	t    *testing.T
	base string // http://127.0.0.1:port
	open string // base + the path with the access token
	tab  context.Context
	dir  string
}

// servePage runs the page's server with the credentials of cfg for ns
// until the test ends, and opens a tab of browser on it.
func servePage(browser context.Context, t *testing.T, cfg *rest.Config, ns, dir string) *page {
	t.Helper()
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ui.New(ui.Options{Client: c, Namespace: ns, ErrLog: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := ui.Listen(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	tab, closeTab := chromedp.NewContext(browser)
	// Opens the tab. The first run on a context must have no timeout: the
	// tab lives as long as that run's context.
	if err := chromedp.Do(tab); err != nil {
		closeTab()
		cancel()
		t.Fatalf("opening a tab: %v", err)
	}
	t.Cleanup(func() {
		closeTab()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the page's server: %v", err)
		}
	})
	u, err := url.Parse(srv.URL(ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	return &page{t: t, base: "http://" + u.Host, open: srv.URL(ln.Addr()), tab: tab, dir: dir}
}

// testWriter logs the page server's error lines in the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("page server: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// do runs browser steps on the tab, failing the test after timeout with
// a screenshot of what the page showed.
func (p *page) do(what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.tab, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
		p.t.Fatalf("%s: %v", what, err)
	}
}

// get runs one browser action that reads a value, failing the test on error.
func get[T any](p *page, what string, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.tab, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		p.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
		p.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// screenshot saves the whole page as <dir>/<name>.png.
func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.tab, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
	}
	p.t.Logf("screenshot: %s", path)
}

// waitText waits until the text of the element sel (a CSS selector)
// contains want, and returns it.
func (p *page) waitText(sel, want string, timeout time.Duration) string {
	p.t.Helper()
	var text string
	var err error
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(p.tab, 5*time.Second)
		text, err = chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)))
		cancel()
		if err == nil && strings.Contains(text, want) {
			return text
		}
		if time.Now().After(deadline) {
			p.screenshot("failed-wait-" + strings.NewReplacer("#", "", " ", "-", "[", "", "]", "", "\"", "", "=", "-").Replace(sel))
			p.t.Fatalf("%s shows %q (error %v), want it to contain %q", sel, text, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSettingsPageInARealBrowser is the acceptance test of the page.
func TestSettingsPageInARealBrowser(t *testing.T) {
	exe := chromium(t)
	dir := artifacts(t)
	ns := env.Namespace(t)
	op := startOperator(t, ns)
	rc := newReceiver(t, ns, "crm-webhook-secret")

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil { // starts the browser; no timeout on this first call
		t.Fatalf("starting %s: %v", exe, err)
	}

	admin := servePage(browser, t, env.Config, ns, dir)
	hookURL := rc.URL + "/hooks/wa"
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// Open the address the command prints, then the form of a new one.
	admin.do("opening the page", 30*time.Second,
		chromedp.Navigate(admin.open),
		chromedp.WaitVisible(css(`#live[data-state="live"]`)),
		chromedp.WaitVisible(css(`#whc-empty`)),
	)
	if location := get(admin, "reading the address", chromedp.Evaluate[string](`location.href`)); strings.Contains(location, "token") {
		t.Errorf("the token stays in the address bar: %s", location)
	}
	admin.do("filling the form", 30*time.Second,
		chromedp.Click(css(`nav a[href="/new"]`)),
		chromedp.WaitVisible(css(`#whc-form`)),
		chromedp.SendKeys(css(`#f-name`), "crm"),
		chromedp.SendKeys(css(`#f-url`), hookURL),
		chromedp.Click(css(`input[name="events"][value="message.sent"]`)),
		chromedp.Click(css(`input[name="events"][value="message.failed"]`)),
		chromedp.Click(css(`#advanced summary`)),
		chromedp.SetValue(css(`#f-maxAttempts`), "3"),
		chromedp.Click(css(`#secret-generate`)),
		chromedp.Poll[chromedp.Void](`document.getElementById("f-secret").value.startsWith("whsec_")`),
	)
	generated := get(admin, "reading the secret", chromedp.Value(css(`#f-secret`)))
	if typ := get(admin, "reading the secret's type", chromedp.Evaluate[string](`document.getElementById("f-secret").type`)); typ != "password" {
		t.Errorf("the secret is shown before it was asked for (input type %q)", typ)
	}
	admin.screenshot("01-new-webhookconfig")
	admin.do("saving", 30*time.Second,
		chromedp.Click(css(`#save`)),
		chromedp.WaitVisible(css(`#status-panel dl`)), // the page of crm
	)

	// Reload: the values come back from the API server.
	admin.do("reloading", 30*time.Second, chromedp.Reload(), chromedp.WaitVisible(css(`#status-panel dl`)))
	gotURL := get(admin, "reading the URL", chromedp.Value(css(`#f-url`)))
	gotAttempts := get(admin, "reading maxAttempts", chromedp.Value(css(`#f-maxAttempts`)))
	gotEvents := get(admin, "reading the events", chromedp.Evaluate[[]string](`[...document.querySelectorAll('input[name="events"]:checked')].map(e => e.value)`))
	enabled := get(admin, "reading enabled", chromedp.Evaluate[bool](`document.getElementById("f-enabled").checked`))
	paused := get(admin, "reading paused", chromedp.Evaluate[bool](`document.getElementById("f-paused").checked`))
	if gotURL != hookURL || gotAttempts != "3" || !slices.Equal(gotEvents, []string{"message.sent", "message.failed"}) || !enabled || paused {
		t.Fatalf("after reload: url %q, maxAttempts %q, events %v, enabled %t, paused %t", gotURL, gotAttempts, gotEvents, enabled, paused)
	}
	var whc webhooksv1alpha1.WebhookConfig
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "crm"}, &whc); err != nil {
		t.Fatal(err)
	}
	if whc.Spec.URL != hookURL || whc.Spec.Delivery.MaxAttempts != 3 || whc.Spec.SecretRef == nil || whc.Spec.SecretRef.Name != "crm-webhook-secret" {
		t.Fatalf("stored: %+v", whc.Spec)
	}
	var sec corev1.Secret
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "crm-webhook-secret"}, &sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["secret"]) != generated {
		t.Fatal("the Secret does not hold the secret the page generated")
	}

	// The operator's status reaches the page live.
	admin.waitText(`#row-crm [data-col="ready"]`, "True", 30*time.Second)
	admin.waitText(`#row-crm [data-col="active"]`, "true", 10*time.Second)

	// Test: a real, signed delivery; the page shows what status.lastTest says.
	admin.do("sending a test", 60*time.Second,
		chromedp.Click(css(`#test`)),
		chromedp.WaitVisible(css(`#test-result[data-state="succeeded"]`)),
	)
	admin.waitText(`#test-result [data-key="statusCode"]`, "200", 5*time.Second)
	admin.waitText(`#test-result [data-key="duration"]`, " ms", 5*time.Second)
	tests := rc.requests("", "webhook.test")
	if len(tests) != 1 || tests[0].err != nil {
		t.Fatalf("the receiver got %d test deliveries (%+v), want 1 that verifies", len(tests), tests)
	}
	var testBody struct {
		Data struct {
			WebhookConfig string `json:"webhookConfig"`
			Namespace     string `json:"namespace"`
		} `json:"data"`
	}
	if err := json.Unmarshal(tests[0].body, &testBody); err != nil || testBody.Data.WebhookConfig != "crm" || testBody.Data.Namespace != ns {
		t.Fatalf("the test delivery's body %s: %v", tests[0].body, err)
	}
	admin.screenshot("02-test-delivery")

	// An event, delivered, in the delivery log panel; resent from it.
	posted := testutil.VariedEvent(ns, 0, "message.sent")
	posted.ID = "ui-evt-1"
	if _, err := op.Dispatcher.Enqueue(context.Background(), []delivery.Event{{
		ID: posted.ID, IdempotencyKey: true, Namespace: ns, Type: posted.Type, Timestamp: time.Now(), Data: posted.Data,
	}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := len(rc.requests(posted.ID, "")); n != 1 {
			return fmt.Errorf("%d deliveries of %s", n, posted.ID)
		}
		return nil
	})
	got := rc.requests(posted.ID, "")[0]
	var gotEnv struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(got.body, &gotEnv); err != nil || got.err != nil || gotEnv.Type != posted.Type || !jsonEqual(t, gotEnv.Data, posted.Data) {
		t.Fatalf("delivered %s (verify: %v), posted type %s data %s", got.body, got.err, posted.Type, posted.Data)
	}
	row := `#deliveries tr[data-event-id="` + posted.ID + `"]`
	deadline := time.Now().Add(30 * time.Second)
	for {
		admin.do("refreshing the deliveries", 10*time.Second, chromedp.Click(css(`#deliveries-refresh`)))
		ctx, cancel := context.WithTimeout(admin.tab, 3*time.Second)
		state, err := chromedp.Run(ctx, chromedp.Text(css(row+` [data-col="state"]`)))
		cancel()
		if err == nil && state == "Succeeded" {
			break
		}
		if time.Now().After(deadline) {
			admin.screenshot("failed-deliveries")
			t.Fatalf("the deliveries panel shows no Succeeded delivery of %s (state %q, %v)", posted.ID, state, err)
		}
	}
	admin.waitText(`#row-crm [data-col="sent"]`, "1", 30*time.Second)
	admin.do("resending", 30*time.Second, chromedp.Click(css(row+` button.resend`)))
	admin.waitText(row+` .resend-status`, "Stored again", 10*time.Second)
	testutil.Eventually(t, 30*time.Second, func() error {
		again := rc.requests(posted.ID, "")
		if len(again) != 2 {
			return fmt.Errorf("%d deliveries of %s after the resend, want 2", len(again), posted.ID)
		}
		if again[1].err != nil {
			return fmt.Errorf("the resent delivery does not verify: %w", again[1].err)
		}
		if !bytes.Equal(again[1].body, again[0].body) {
			return fmt.Errorf("the resent delivery's body %s differs from the first %s", again[1].body, again[0].body)
		}
		return nil
	})
	admin.do("refreshing the deliveries", 10*time.Second, chromedp.Click(css(`#deliveries-refresh`)))
	admin.waitText(row, "2 attempts", 20*time.Second)
	admin.screenshot("03-deliveries")

	// A bad URL: the API server's message beside the URL, nothing stored.
	admin.do("saving a bad URL", 30*time.Second,
		chromedp.SetValue(css(`#f-url`), "ftp://crm.example.com/hooks"),
		chromedp.Click(css(`#save`)),
		chromedp.WaitVisible(css(`#save-status[data-state="refused"]`)),
	)
	msg := admin.waitText(`[id="err-spec.url"]`, "url scheme must be http or https", 5*time.Second)
	if invalid := get(admin, "reading aria-invalid", chromedp.Evaluate[string](`document.getElementById("f-url").getAttribute("aria-invalid") || ""`)); invalid != "true" {
		t.Errorf("the URL field is not marked invalid (message %q)", msg)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "crm"}, &whc); err != nil || whc.Spec.URL != hookURL {
		t.Fatalf("the bad URL was stored: %q (%v)", whc.Spec.URL, err)
	}
	admin.screenshot("04-bad-url")

	// A user with only the view role: the same page, read-only.
	viewer := servePage(browser, t, viewerConfig(t, ns), ns, dir)
	viewer.do("opening the viewer's page", 30*time.Second,
		chromedp.Navigate(viewer.base+"/webhooks/crm?token="+tokenOf(t, viewer.open)),
		chromedp.WaitVisible(css(`#readonly-notice`)),
		chromedp.WaitVisible(css(`#live[data-state="live"]`)),
	)
	viewer.waitText(`#readonly-notice`, "you may not patch webhookconfigs.webhooks.wablast.io", 5*time.Second)
	for _, id := range []string{"save", "test", "f-url", "rotate"} {
		if !get(viewer, "reading "+id, chromedp.Evaluate[bool](`document.getElementById("`+id+`").matches(":disabled")`)) {
			t.Errorf("the viewer's #%s is not disabled", id)
		}
	}
	viewer.waitText(`#row-crm [data-col="ready"]`, "True", 10*time.Second)
	viewer.screenshot("05-view-only")
	// Forced past the disabled form, the save is refused by the API server.
	viewer.do("saving as the viewer anyway", 20*time.Second,
		chromedp.Evaluate[chromedp.Void](`document.getElementById("form-fields").disabled = false`),
		chromedp.SetValue(css(`#f-url`), "https://attacker.example.com/"),
		chromedp.Click(css(`#save`)),
		chromedp.WaitVisible(css(`#save-status[data-state="refused"]`)),
	)
	if refused := get(viewer, "reading the refusal", chromedp.Text(css(`#err-general`))); !strings.Contains(refused, `cannot patch resource "webhookconfigs"`) {
		t.Fatalf("the viewer's save shows %q, want the API server's refusal", refused)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "crm"}, &whc); err != nil || whc.Spec.URL != hookURL {
		t.Fatalf("the viewer changed the URL: %q (%v)", whc.Spec.URL, err)
	}
}

// tokenOf returns the access token of the address a page server prints.
func tokenOf(t *testing.T, address string) string {
	t.Helper()
	u, err := url.Parse(address)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("token")
}

// jsonEqual reports whether a and b hold the same JSON value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// viewerConfig is the rest config of a user with only the "view" role in ns
// (testutil.Env.ViewerConfig).
func viewerConfig(t *testing.T, ns string) *rest.Config {
	t.Helper()
	cfg, _ := env.ViewerConfig(t, ns)
	return cfg
}
