//go:build e2e

// Package e2e drives the built binaries the way a user does: a local control
// plane, `helm install` of the chart, bin/manager run out of the cluster as
// the chart's ServiceAccount (so the chart's RBAC is what is tested),
// `kubectl apply` of the samples, events posted to the ingestion API, the demo
// receiver verifying every signature, `kubectl get`, `kubectl wait`,
// `kubectl webhook test`, and `helm uninstall`. Every event posted has data
// of its own, and what each receiver got is checked against it: the type and
// data the demo receiver prints, and every body a second endpoint's receiver
// (the content oracle, testutil.Receiver) keeps. Run it with `make test-e2e`.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/wablast/webhook-operator/internal/testutil"
)

const (
	release      = "wablast"
	releaseNS    = "webhook-operator-system"
	appNS        = "e2e"
	ingestAddr   = "127.0.0.1:18082"
	probesAddr   = "127.0.0.1:18081"
	receiverAddr = "127.0.0.1:9000" // config/samples points here
	sampleSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	sampleToken  = "dev-ingest-token-0123456789abcdef"
)

type runner struct {
	t          *testing.T
	root, bin  string
	kubeconfig string
	helm       string
}

func (r *runner) run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = r.root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+r.kubeconfig, "PATH="+r.bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *runner) must(name string, args ...string) string {
	r.t.Helper()
	out, err := r.run(name, args...)
	if err != nil {
		r.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (r *runner) kubectl(args ...string) string { r.t.Helper(); return r.must("kubectl", args...) }

func (r *runner) eventually(timeout time.Duration, check func() error) {
	r.t.Helper()
	testutil.Eventually(r.t, timeout, check)
}

// startProcess runs a binary in its own process group, logging to a file that
// is printed if the test fails; it returns the process and the file's path.
func (r *runner) startProcess(logName, path string, args ...string) (*exec.Cmd, string) {
	r.t.Helper()
	logFile := filepath.Join(r.t.TempDir(), logName)
	f, err := os.Create(logFile)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if r.t.Failed() {
			data, _ := os.ReadFile(logFile)
			r.t.Logf("==== %s ====\n%s", logName, tail(string(data), 60))
		}
	})
	return cmd, logFile
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// impersonatingKubeconfig writes a copy of the admin kubeconfig that acts as user.
func impersonatingKubeconfig(t *testing.T, admin, user string) string {
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Impersonate = user
	}
	path := filepath.Join(t.TempDir(), "manager.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// printedLine is one event the demo receiver printed.
var printedLine = regexp.MustCompile(`^\S+ verified id=(\S+) type=(\S+) data=(.*)$`)

// checkPrinted reads the demo receiver's output and checks that every event
// it printed has the type and data posted under its id, and that every id
// of want was printed.
func checkPrinted(logFile string, ledger *testutil.Ledger, want []string) error {
	out, err := os.ReadFile(logFile)
	if err != nil {
		return err
	}
	printed := map[string]bool{}
	var problems []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := printedLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		id, typ, data := m[1], m[2], m[3]
		printed[id] = true
		ev, ok := ledger.Get(id)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s was never posted", id))
		case typ != ev.Type:
			problems = append(problems, fmt.Sprintf("%s: type %s, posted %s", id, typ, ev.Type))
		case !sameJSON([]byte(data), ev.Data):
			problems = append(problems, fmt.Sprintf("%s: data %.200s, posted %.200s", id, data, ev.Data))
		}
	}
	for _, id := range want {
		if !printed[id] {
			problems = append(problems, fmt.Sprintf("%s was not printed", id))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%d problems: %s", len(problems), strings.Join(problems[:min(len(problems), 10)], "; "))
	}
	return nil
}

// sameJSON reports whether a and b are the same JSON value (members in any
// order, numbers as written).
func sameJSON(a, b []byte) bool {
	decode := func(b []byte) (any, error) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		err := dec.Decode(&v)
		return v, err
	}
	va, errA := decode(a)
	vb, errB := decode(b)
	return errA == nil && errB == nil && reflect.DeepEqual(va, vb)
}

func TestEndToEnd(t *testing.T) {
	root := testutil.RepoRoot()
	bin := filepath.Join(root, "bin")
	for _, b := range []string{"manager", "kubectl-webhook", "webhook-receiver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("bin/%s is missing: run 'make test-e2e', which builds it", b)
		}
	}
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal("HELM must point at the helm binary: run 'make test-e2e'")
	}

	env, err := testutil.StartEnvWith(testutil.EnvOptions{InstallCRDs: false})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	r := &runner{t: t, root: root, bin: bin, kubeconfig: env.Kubeconfig, helm: helm}

	// 1. helm install: every object is accepted by the real API server.
	// The manager runs out of the cluster here, so no Service can reach its
	// delivery API: an APIService without a server would make discovery
	// (and so kubectl and helm) report the group unavailable. The delivery
	// API is tested through the aggregation layer in test/deliverylog.
	r.must(helm, "install", release, "charts/webhook-operator", "--namespace", releaseNS, "--create-namespace",
		"--set", "deliveryAPI.enabled=false")
	r.kubectl("get", "crd", "webhookconfigs.webhooks.wablast.io")
	sa := strings.TrimSpace(r.kubectl("get", "serviceaccounts", "-n", releaseNS,
		"-l", "app.kubernetes.io/instance="+release, "-o", "jsonpath={.items[0].metadata.name}"))
	if sa == "" {
		t.Fatal("the chart installed no ServiceAccount")
	}
	// The API server serves ValidatingAdmissionPolicy (1.30+), so helm
	// installed the policy on the manager's Secrets; the manager, below,
	// creates the signing Secret of WebhookConfig "generated" through it.
	if out := strings.TrimSpace(r.kubectl("get", "validatingadmissionpolicies,validatingadmissionpolicybindings",
		"-l", "app.kubernetes.io/instance="+release, "-o", "name")); strings.Count(out, "\n") != 1 {
		t.Errorf("the chart installed %q, want the Secret policy and its binding", out)
	}

	// 2. The manager, out of the cluster, as the chart's ServiceAccount.
	managerKubeconfig := impersonatingKubeconfig(t, env.Kubeconfig, "system:serviceaccount:"+releaseNS+":"+sa)
	// The demo receiver prints every verified event (id, type and data),
	// which the test reads back.
	_, receiverLog := r.startProcess("receiver.log", filepath.Join(bin, "webhook-receiver"), "--listen", receiverAddr, "--secret", sampleSecret)
	mgr, _ := r.startProcess("manager.log", filepath.Join(bin, "manager"),
		"--kubeconfig", managerKubeconfig,
		"--data-dir", filepath.Join(t.TempDir(), "nats"),
		"--leader-elect", "--leader-election-namespace", releaseNS,
		"--ingest-bind-address", ingestAddr,
		"--delivery-api-bind-address", "127.0.0.1:0",
		"--health-probe-bind-address", probesAddr,
		"--metrics-bind-address", "127.0.0.1:18080",
		"--egress-allow-cidrs", "127.0.0.0/8",
		"--status-flush-interval", "1s")
	r.eventually(90*time.Second, func() error {
		if mgr.ProcessState != nil {
			return fmt.Errorf("manager exited")
		}
		resp, err := http.Get("http://" + probesAddr + "/readyz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})

	// 3. kubectl apply the samples, and a second endpoint for every event
	// type whose receiver keeps every body; kubectl wait.
	ledger := testutil.NewLedger()
	oracle, err := testutil.NewReceiver(sampleSecret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	oracleSrv := httptest.NewServer(oracle)
	defer oracleSrv.Close()
	// The endpoint "filtered" has a spec.filter; its receiver must get
	// exactly the events the filter selects (matchesFilter).
	filteredRcv, err := testutil.NewReceiver(sampleSecret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	filteredSrv := httptest.NewServer(filteredRcv)
	defer filteredSrv.Close()
	oracleManifest := filepath.Join(t.TempDir(), "oracle.yaml")
	if err := os.WriteFile(oracleManifest, []byte(fmt.Sprintf(`apiVersion: webhooks.wablast.io/v1alpha1
kind: WebhookConfig
metadata:
  name: oracle
spec:
  url: %s/hooks/oracle
  secretRef:
    name: crm-webhook-secret
  events: ["*"]
---
# No secretRef: the manager generates generated-signing, through the
# chart's admission policy on its Secrets. Disabled: it receives nothing.
apiVersion: webhooks.wablast.io/v1alpha1
kind: WebhookConfig
metadata:
  name: generated
spec:
  url: %s/hooks/generated
  events: ["*"]
  enabled: false
---
apiVersion: webhooks.wablast.io/v1alpha1
kind: WebhookConfig
metadata:
  name: filtered
spec:
  url: %s/hooks/filtered
  secretRef:
    name: crm-webhook-secret
  events: ["*"]
  filter: %s
`, oracleSrv.URL, oracleSrv.URL, filteredSrv.URL, e2eFilter)), 0o644); err != nil {
		t.Fatal(err)
	}
	r.kubectl("create", "namespace", appNS)
	r.kubectl("apply", "-n", appNS, "-f", "config/samples/")
	r.kubectl("apply", "-n", appNS, "-f", oracleManifest)
	r.kubectl("wait", "-n", appNS, "--for=condition=Ready", "whc/crm", "whc/oracle", "whc/generated", "whc/filtered", "--timeout=90s")
	checkBadFilters(t, r)

	// 4. Post events with the sample token: 20 single events and a batch
	// of 30, every other one without an id, each with data of its own, of
	// every type (crm subscribes to the message types only). The receivers
	// verify every signature.
	// The 202 of a single event counts the endpoints that will get it:
	// oracle, crm for the message types, filtered where its filter matches
	// (not generated, which is disabled, nor badfilter).
	var subscriberProblems []string
	checkSubscribers := func(ev testutil.Posted, answer []byte) {
		var a struct{ Subscribers int }
		if err := json.Unmarshal(answer, &a); err != nil {
			t.Fatal(err)
		}
		want := 1
		if strings.HasPrefix(ev.Type, "message.") {
			want++
		}
		if matchesFilter(t, ev) {
			want++
		}
		if a.Subscribers != want {
			subscriberProblems = append(subscriberProblems, fmt.Sprintf("%s (%s): subscribers %d, want %d", ev.ID, ev.Type, a.Subscribers, want))
		}
	}
	postEvents := func(ct string, body []byte, posted []testutil.Posted) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+ingestAddr+"/v1/namespaces/"+appNS+"/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+sampleToken)
		req.Header.Set("Content-Type", ct)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("post: %d %s", resp.StatusCode, answer)
		}
		ids, err := ledger.Accepted(posted, answer)
		if err != nil {
			t.Fatal(err)
		}
		if len(posted) == 1 {
			ev := posted[0]
			ev.ID = ids[0]
			checkSubscribers(ev, answer)
		}
	}
	withoutID := func(ev testutil.Posted) testutil.Posted { ev.ID = ""; return ev }
	for i, ev := range testutil.VariedEvents("e2e", 20) {
		if i%2 == 1 {
			postEvents("application/json", ev.JSON(false), []testutil.Posted{withoutID(ev)})
		} else {
			postEvents("application/json", ev.JSON(true), []testutil.Posted{ev})
		}
	}
	var batch bytes.Buffer
	var batchPosted []testutil.Posted
	for i, ev := range testutil.VariedEvents("e2e-batch", 30) {
		batch.Write(ev.JSON(i%2 == 0))
		batch.WriteByte('\n')
		if i%2 == 1 {
			ev = withoutID(ev)
		}
		batchPosted = append(batchPosted, ev)
	}
	postEvents("application/x-ndjson", batch.Bytes(), batchPosted)
	all := ledger.IDs()
	var toCRM []string // the events of the types crm subscribes to
	for _, id := range all {
		if ev, _ := ledger.Get(id); strings.HasPrefix(ev.Type, "message.") {
			toCRM = append(toCRM, id)
		}
	}
	if len(toCRM) == 0 || len(toCRM) == len(all) {
		t.Fatalf("%d of %d events are message events: the test needs both kinds", len(toCRM), len(all))
	}
	n := len(toCRM)
	r.eventually(60*time.Second, func() error {
		resp, err := http.Get("http://" + receiverAddr + "/stats")
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		var st struct{ Verified, Rejected, Unique int }
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return err
		}
		if st.Rejected != 0 {
			t.Fatalf("the receiver rejected %d signatures", st.Rejected)
		}
		if st.Unique != n {
			return fmt.Errorf("receiver verified %d unique events, want %d", st.Unique, n)
		}
		return nil
	})
	// The demo receiver printed each event's type and data: they are what was posted.
	if err := checkPrinted(receiverLog, ledger, toCRM); err != nil {
		t.Errorf("the demo receiver: %v", err)
	}
	// The second endpoint got every event, each body exactly what was posted.
	r.eventually(60*time.Second, func() error {
		if got := oracle.Unique(); got != len(all) {
			return fmt.Errorf("the oracle endpoint received %d of %d events", got, len(all))
		}
		return nil
	})
	if err := oracle.CheckAll(all); err != nil {
		t.Errorf("the oracle endpoint: %v", err)
	}
	t.Logf("%d events posted; the demo receiver printed the %d message events with the type and data posted; the oracle endpoint got all %d, each body exactly what was posted", len(all), n, len(all))

	// The filtered endpoint got exactly the events its filter selects, each
	// body exactly what was posted, and the 202s counted it only for those.
	var filtered []string
	for _, id := range all {
		if ev, _ := ledger.Get(id); matchesFilter(t, ev) {
			filtered = append(filtered, id)
		}
	}
	if len(filtered) == 0 || len(filtered) == len(all) {
		t.Fatalf("the filter selects %d of %d events: the test needs both kinds", len(filtered), len(all))
	}
	r.eventually(60*time.Second, func() error {
		if got := filteredRcv.Unique(); got < len(filtered) {
			return fmt.Errorf("the filtered endpoint received %d of %d events", got, len(filtered))
		}
		return nil
	})
	if err := filteredRcv.CheckAll(filtered); err != nil {
		t.Errorf("the filtered endpoint: %v", err)
	}
	// Every event reached the oracle, so every one was fanned out: anything
	// else the filter let through has arrived by now.
	if got := filteredRcv.Requests(); len(got) != len(filtered) {
		var extra []string
		for id := range got {
			if !slices.Contains(filtered, id) {
				extra = append(extra, id)
			}
		}
		t.Errorf("the filtered endpoint received %d events, want %d; not selected by the filter: %v", len(got), len(filtered), extra)
	}
	if len(subscriberProblems) > 0 {
		t.Errorf("the 202s' subscribers: %s", strings.Join(subscriberProblems, "; "))
	}
	t.Logf("the filtered endpoint got the %d of %d events its filter selects, and no other", len(filtered), len(all))

	// 4b. Ordered delivery (spec.delivery.ordering PerKey), applied with kubectl.
	checkOrdered(t, r, ingestAddr, ledger)

	// 5. kubectl get whc shows the contract's columns with the right numbers.
	r.eventually(30*time.Second, func() error {
		out := r.kubectl("get", "whc", "-n", appNS)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME ACTIVE READY DELIVERING SUCCESS RATE SENT LAST DELIVERY AGE" {
			t.Fatalf("columns %q", got)
		}
		var row []string
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) > 0 && f[0] == "crm" {
				row = f
			}
		}
		if len(row) < 6 || row[1] != "true" || row[2] != "True" || row[3] != "True" || row[4] != "100.0%" || row[5] != fmt.Sprint(n) {
			return fmt.Errorf("row %q", row)
		}
		return nil
	})

	// 6. kubectl webhook test --wait, through kubectl's plugin discovery.
	out := r.kubectl("webhook", "test", "crm", "-n", appNS, "--wait", "--timeout", "60s")
	if !strings.Contains(out, "Succeeded") {
		t.Errorf("kubectl webhook test: %s", out)
	}

	// 7. helm uninstall leaves no orphaned object but the kept CRD.
	_ = syscall.Kill(-mgr.Process.Pid, syscall.SIGTERM)
	r.must(helm, "uninstall", release, "--namespace", releaseNS, "--wait")
	for _, kind := range []string{"serviceaccounts,services,statefulsets,deployments,roles,rolebindings,configmaps,secrets,poddisruptionbudgets,networkpolicies,persistentvolumeclaims"} {
		if out := strings.TrimSpace(r.kubectl("get", kind, "-n", releaseNS, "-l", "app.kubernetes.io/instance="+release, "-o", "name")); out != "" {
			t.Errorf("left behind in %s:\n%s", releaseNS, out)
		}
	}
	if out := strings.TrimSpace(r.kubectl("get", "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings", "-l", "app.kubernetes.io/instance="+release, "-o", "name")); out != "" {
		t.Errorf("cluster-scoped objects left behind:\n%s", out)
	}
	r.kubectl("get", "crd", "webhookconfigs.webhooks.wablast.io")
}

// e2eFilter is the spec.filter of the WebhookConfig "filtered": on the
// type, on an integer in data and on the timestamp. matchesFilter is the
// same rule in Go.
const e2eFilter = `'(type.startsWith("session.") || data.seq % 3 == 0) && timestamp > timestamp("2020-01-01T00:00:00Z")'`

// matchesFilter reports whether e2eFilter selects ev (every posted
// timestamp is after 2020).
func matchesFilter(t *testing.T, ev testutil.Posted) bool {
	t.Helper()
	var d struct{ Seq int }
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		t.Fatalf("data of %s: %v", ev.ID, err)
	}
	return strings.HasPrefix(ev.Type, "session.") || d.Seq%3 == 0
}

// checkBadFilters applies, with kubectl, a blank filter, which the API
// server refuses, and one that does not compile, which the manager reports
// as Ready=False with the compiler's message; badfilter stays, and the
// 202s of the events posted next do not count it.
func checkBadFilters(t *testing.T, r *runner) {
	t.Helper()
	dir := t.TempDir()
	manifest := func(name, filter string) string {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: webhooks.wablast.io/v1alpha1
kind: WebhookConfig
metadata:
  name: %s
spec:
  url: http://127.0.0.1:1/hooks
  secretRef:
    name: crm-webhook-secret
  events: ["*"]
  filter: %s
`, name, filter)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	out, err := r.run("kubectl", "apply", "-n", appNS, "-f", manifest("blankfilter", `"   "`))
	if err == nil || !strings.Contains(out, "filter must not be blank") {
		t.Errorf("kubectl apply of a blank filter: err=%v\n%s", err, out)
	}
	r.kubectl("apply", "-n", appNS, "-f", manifest("badfilter", `'type == 42 || data.campaignId == "c-42"'`))
	r.kubectl("wait", "-n", appNS, "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=InvalidFilter", "whc/badfilter", "--timeout=60s")
	msg := r.kubectl("get", "whc", "badfilter", "-n", appNS, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].message}`)
	if !strings.Contains(msg, "found no matching overload for '_==_' applied to '(string, int)'") {
		t.Errorf("badfilter's Ready message %q lacks the compiler's", msg)
	}
	wide := r.kubectl("get", "whc", "filtered", "badfilter", "-n", appNS, "-o", "wide")
	if !strings.Contains(strings.SplitN(wide, "\n", 2)[0], "FILTER") || !strings.Contains(wide, `data.seq % 3 == 0`) || !strings.Contains(wide, "type == 42") {
		t.Errorf("kubectl get -o wide does not show the filters:\n%s", wide)
	}
	if row := strings.Fields(strings.Split(wide, "\n")[2]); len(row) < 3 || row[0] != "badfilter" || row[1] != "false" || row[2] != "False" {
		t.Errorf("badfilter's row %q, want not active and not Ready", row)
	}
}

// checkOrdered applies a PerKey WebhookConfig with kubectl (and two the
// API server or the manager refuse), posts 4 sessions' events in turn, 5
// each, to a receiver that answers 500 to the first request of every
// event, and checks that each session's events arrived in the order posted
// (each only after the one before it was answered 2xx), each body exactly
// what was posted.
func checkOrdered(t *testing.T, r *runner, ingestAddr string, ledger *testutil.Ledger) {
	t.Helper()
	rcv, err := testutil.NewReceiver(sampleSecret, ledger)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	lastOK := map[string]int{}
	seen := map[string]bool{}
	var violations []string
	rcv.Respond = func(w http.ResponseWriter, _ *http.Request, d testutil.Delivery) int {
		var env struct {
			Data struct {
				SessionID string `json:"sessionId"`
				N         int    `json:"n"`
			} `json:"data"`
		}
		if err := json.Unmarshal(d.Body, &env); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return http.StatusBadRequest
		}
		key, n := env.Data.SessionID, env.Data.N
		mu.Lock()
		defer mu.Unlock()
		if last := lastOK[key]; last != n-1 && last != n {
			violations = append(violations, fmt.Sprintf("%s: event %d arrived when event %d was the last delivered", key, n, last))
		}
		if !seen[d.ID] { // the first request of every event fails: it is retried
			seen[d.ID] = true
			w.WriteHeader(http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		lastOK[key] = max(lastOK[key], n)
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	dir := t.TempDir()
	manifest := func(name, delivery string) string {
		path := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: webhooks.wablast.io/v1alpha1
kind: WebhookConfig
metadata:
  name: %s
spec:
  url: %s/hooks/%s
  secretRef:
    name: crm-webhook-secret
  events: ["session.connected", "session.disconnected"]
  delivery:
%s`, name, srv.URL, name, delivery)), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	out, err := r.run("kubectl", "apply", "-n", appNS, "-f", manifest("sometimes", "    ordering: Sometimes\n"))
	if err == nil || !strings.Contains(out, `Unsupported value: "Sometimes"`) {
		t.Errorf("kubectl apply of ordering Sometimes: err=%v\n%s", err, out)
	}
	r.kubectl("apply", "-n", appNS, "-f", manifest("badkey", "    ordering: PerKey\n    orderingKey: 'data.sessionId +'\n"))
	r.kubectl("wait", "-n", appNS, "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=InvalidOrderingKey", "whc/badkey", "--timeout=60s")
	r.kubectl("delete", "-n", appNS, "whc/badkey")
	r.kubectl("apply", "-n", appNS, "-f", manifest("ordered", "    ordering: PerKey\n    initialBackoffSeconds: 1\n    maxBackoffSeconds: 2\n"))
	r.kubectl("wait", "-n", appNS, "--for=condition=Ready", "whc/ordered", "--timeout=60s")
	wide := r.kubectl("get", "whc", "ordered", "-n", appNS, "-o", "wide")
	if !strings.Contains(strings.SplitN(wide, "\n", 2)[0], "ORDERING") || !strings.Contains(wide, "PerKey") {
		t.Errorf("kubectl get -o wide does not show the ordering:\n%s", wide)
	}

	const sessions, each = 4, 5
	var ids []string
	for n := 1; n <= each; n++ {
		for s := range sessions {
			typ := "session.connected"
			if n%2 == 0 {
				typ = "session.disconnected"
			}
			ev := testutil.Posted{
				ID: fmt.Sprintf("e2e-ordered-s%d-%d", s, n), Type: typ,
				Data: []byte(fmt.Sprintf(`{"sessionId":"s%d","phoneNumber":"+6281234567890","n":%d}`, s, n)),
			}
			req, _ := http.NewRequest(http.MethodPost, "http://"+ingestAddr+"/v1/namespaces/"+appNS+"/events", bytes.NewReader(ev.JSON(true)))
			req.Header.Set("Authorization", "Bearer "+sampleToken)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("post: %d %s", resp.StatusCode, answer)
			}
			if _, err := ledger.Accepted([]testutil.Posted{ev}, answer); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ev.ID)
		}
	}
	r.eventually(90*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for s := range sessions {
			if got := lastOK[fmt.Sprintf("s%d", s)]; got != each {
				return fmt.Errorf("session s%d: %d of %d events delivered", s, got, each)
			}
		}
		return nil
	})
	if err := rcv.CheckAll(ids); err != nil {
		t.Errorf("the ordered endpoint: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Errorf("the ordered endpoint got events out of order: %s", strings.Join(violations, "; "))
	}
	t.Logf("the PerKey endpoint got %d sessions' %d events each in the order posted, every first attempt answered 500 and retried", sessions, each)
	r.kubectl("delete", "-n", appNS, "whc/ordered")
}

// TestCheckPrintedCatchesAnotherEventsData shows that checkPrinted can
// fail: a printed event carrying another posted event's data is caught.
func TestCheckPrintedCatchesAnotherEventsData(t *testing.T) {
	evs := testutil.VariedEvents("self", 2)
	ledger := testutil.NewLedger()
	ledger.Add(evs...)
	logFile := filepath.Join(t.TempDir(), "receiver.log")
	write := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(logFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	line := func(id, typ string, data []byte) string {
		var compact bytes.Buffer
		if err := json.Compact(&compact, data); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("2026-11-28T10:15:02Z verified id=%s type=%s data=%s", id, typ, compact.String())
	}
	write(line(evs[0].ID, evs[0].Type, evs[0].Data), line(evs[1].ID, evs[1].Type, evs[1].Data))
	if err := checkPrinted(logFile, ledger, ledger.IDs()); err != nil {
		t.Fatalf("what was posted was refused: %v", err)
	}
	write(line(evs[0].ID, evs[0].Type, evs[1].Data), line(evs[1].ID, evs[1].Type, evs[1].Data))
	if err := checkPrinted(logFile, ledger, ledger.IDs()); err == nil || !strings.Contains(err.Error(), "data") {
		t.Fatalf("checkPrinted = %v, want event 0 with event 1's data refused", err)
	}
}
