// Package monitoring tests what the chart ships for monitoring, with
// promtool (Debian's prometheus package; `make promtool`): every alert of
// the PrometheusRule, as the chart renders it, has unit tests in
// testdata/*.rules_test.yaml run by `promtool test rules`, and every query
// of the generated Grafana dashboard parses as PromQL. That each metric
// they use is exported by a manager that delivered events is checked by
// the e2e test TestMonitoredMetricsAreExported (test/e2e).
//
// promtool parses rather than the Prometheus module's PromQL parser, which
// would pull all of Prometheus into go.mod for a test.
package monitoring

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// rulesFile is the name the unit tests' rule_files give the rendered rules.
const rulesFile = "rules.yaml"

// The alerts the chart ships; each needs unit tests.
var alerts = []string{
	"WebhookEndpointFailing", "WebhookDeliveryLagHigh", "WebhookIngestionUnavailable",
	"WebhookEventsFailedForGood", "WebhookOperatorAbsent", "WebhookEventsNotFannedOut",
}

// promtoolDir writes the rendered rules and the unit tests into a
// temporary directory, for promtool.
func promtoolDir(t *testing.T, rules []byte) (dir string, tests []string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, rulesFile), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.rules_test.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no unit tests of the rules in testdata (%v)", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, name)
	}
	return dir, tests
}

// The chart's alerts pass their unit tests, and every alert has some.
func TestAlertRules(t *testing.T) {
	promtool := testutil.Promtool(t)
	rules := testutil.RenderedRules(t)
	dir, tests := promtoolDir(t, rules)
	testutil.Run(t, dir, promtool, "check", "rules", rulesFile)

	var defined []string
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(rules, &f); err != nil {
		t.Fatal(err)
	}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			defined = append(defined, r.Alert)
		}
	}
	if !slices.Equal(defined, alerts) {
		t.Errorf("the chart's alerts are %v, want %v (update this test and docs/operations.md)", defined, alerts)
	}
	tested := map[string]bool{}
	for _, name := range tests {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^\s*alertname:\s*(\S+)`).FindAllStringSubmatch(string(data), -1) {
			tested[m[1]] = true
		}
	}
	for _, a := range alerts {
		if !tested[a] {
			t.Errorf("alert %s has no unit test in testdata", a)
		}
	}

	out := testutil.Run(t, dir, promtool, append([]string{"test", "rules"}, tests...)...)
	t.Log(out)
}

// A unit test fails when its alert does not behave: the same tests against
// rules with the lag threshold raised out of reach must fail, or the tests
// would pass whatever the rules say.
func TestAlertRuleTestsCanFail(t *testing.T) {
	promtool := testutil.Promtool(t)
	dir, tests := promtoolDir(t, testutil.RenderedRules(t, "metrics.prometheusRule.deliveryLagSeconds=86400"))
	out, err := runOutput(dir, promtool, append([]string{"test", "rules"}, tests...)...)
	if err == nil {
		t.Fatalf("the unit tests pass against rules whose lag alert cannot fire:\n%s", out)
	}
	if !strings.Contains(out, "WebhookDeliveryLagHigh") {
		t.Errorf("promtool failed, but not on WebhookDeliveryLagHigh:\n%s", out)
	}
}

// Every query of the dashboard is PromQL once Grafana's variables are
// replaced: promtool checks them as recording rules, which it parses.
func TestDashboardQueriesParse(t *testing.T) {
	promtool := testutil.Promtool(t)
	if n := len(testutil.DashboardQueries(t)); n < 10 {
		t.Fatalf("only %d queries in the dashboard", n)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yaml"), testutil.DashboardRulesFile(t), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, dir, promtool, "check", "rules", "dashboard.yaml")
}

// promtool's check fails on a query that does not parse, so the check
// above can fail.
func TestDashboardQueryCheckCanFail(t *testing.T) {
	promtool := testutil.Promtool(t)
	dir := t.TempDir()
	bad := "groups:\n- name: dashboard\n  rules:\n  - record: dashboard:query_0\n    expr: sum by (name (rate(wablast_webhook_delivery_attempts_total[2m]))\n"
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runOutput(dir, promtool, "check", "rules", "dashboard.yaml"); err == nil {
		t.Fatalf("promtool took a query that does not parse:\n%s", out)
	}
}

// Every metric the dashboard and the alerts use is in docs/operations.md's
// table of metrics.
func TestMonitoredMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	exprs := testutil.RuleExprs(t, testutil.RenderedRules(t))
	for _, q := range testutil.DashboardQueries(t) {
		exprs = append(exprs, q.Expr)
	}
	for _, name := range testutil.MetricNames(exprs...) {
		if !strings.Contains(string(doc), "| `"+name+"` |") {
			t.Errorf("%s is used by the dashboard or the alerts but not in docs/operations.md's metrics table", name)
		}
	}
}
