package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// refuseOnceProxy serves a proxy to the ingestion API at addr that answers
// the first request 503 with Retry-After: 1, as a load balancer in front of
// a restarting manager would, and forwards the others. It returns its URL
// and how many requests it got.
func refuseOnceProxy(t *testing.T, addr string) (string, *atomic.Int32) {
	t.Helper()
	target, err := url.Parse("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int32
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if seen.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"store_unavailable","message":"the store is unavailable; nothing was stored"}}`)
			return
		}
		proxy.ServeHTTP(w, req)
	})}
	frontAddr := testutil.FreeAddr(t)
	ln, err := netListen(frontAddr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = front.Serve(ln) }()
	t.Cleanup(func() { _ = front.Close() })
	return "http://" + frontAddr, &seen
}

// The PHP client in clients/php, run by php-cli against the real ingestion
// API (clients/php/tests/against_manager.php does the posting and checks
// the answers); here, what it posted arrives once with its content. php
// must be installed (make php-cli): the test fails without it.
func TestThePHPClientAgainstTheIngestionAPI(t *testing.T) {
	php, err := exec.LookPath("php")
	if err != nil {
		t.Fatal("php is not installed: run make php-cli (apt-get install php-cli)")
	}
	ns := env.Namespace(t)
	r := startOperator(t, ns, t.TempDir())
	createIngestToken(t, ns)
	ledger := testutil.NewLedger()
	rc := newRecordingReceiver(t, ledger, http.StatusOK)
	createEndpoint(t, ns, "crm", rc.URL, 3)
	waitReady(t, ns, "crm")
	addr := r.op.Ingest.Addr()

	// Events of every type, with unicode, escapes, nested data and some
	// timestamps: PHP decodes and encodes them again, and they must arrive
	// as they were.
	evs := testutil.VariedEvents("php", 40)
	dir := t.TempDir()
	file, sentFile := filepath.Join(dir, "events.ndjson"), filepath.Join(dir, "sent.ndjson")
	if err := os.WriteFile(file, testutil.NDJSON(evs, true), 0o600); err != nil {
		t.Fatal(err)
	}
	retry := testutil.VariedEvent("php-retried", 3)
	proxyURL, proxied := refuseOnceProxy(t, addr)

	cmd := exec.CommandContext(t.Context(), php, "clients/php/tests/against_manager.php")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(),
		"WABLAST_URL=http://"+addr, "WABLAST_TOKEN="+ingestToken, "WABLAST_NAMESPACE="+ns,
		"WABLAST_EVENTS="+file, "WABLAST_PROXY_URL="+proxyURL, "WABLAST_RETRY_EVENT="+string(retry.JSON(true)), "WABLAST_SENT="+sentFile)
	out, err := cmd.CombinedOutput()
	t.Logf("php:\n%s", out)
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "done") {
		t.Fatalf("the PHP client's checks failed: %v", err)
	}
	// What arrives is checked against what PHP sent: PHP writes numbers its
	// own way (2.50 as 2.5, 12345678901234567890 as a float), and the API
	// delivers the bytes it accepted. The events are the ones given to it.
	sent, err := os.ReadFile(sentFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(sent)), "\n")
	if len(lines) != len(evs)+1 {
		t.Fatalf("PHP sent %d events, want %d", len(lines), len(evs)+1)
	}
	for i, line := range lines {
		var p testutil.Posted
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("sent line %d: %v", i+1, err)
		}
		orig := retry
		if i < len(evs) {
			orig = evs[i]
		}
		if p.ID != orig.ID || p.Type != orig.Type || p.Timestamp != orig.Timestamp || !json.Valid(p.Data) {
			t.Errorf("PHP sent %.200s for %s", line, orig.ID)
		}
		ledger.Add(p)
	}
	if n := proxied.Load(); n != 2 {
		t.Errorf("the proxy got %d requests, want 2 (refused, then posted again)", n)
	}

	checkDeliveredOnce(t, ns, "crm", rc, ledger.IDs())
}
