package testutil

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// Promtool returns $PROMTOOL, else promtool on PATH. It fails the test, never
// skips it, when there is none: the alert rules and the dashboard's queries
// are checked with it (`make promtool` installs it; .ci/run does).
func Promtool(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("PROMTOOL=%s: %v; run 'make promtool'", p, err)
		}
		return p
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("no promtool: run 'make promtool' (Debian's prometheus package) or set PROMTOOL")
	}
	return p
}

// Helm returns $HELM, else bin/helm-v3.22.0 of the repository, else helm on
// PATH; it fails the test when there is none.
func Helm(t testing.TB) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if h := filepath.Join(RepoRoot(), "bin", "helm-v3.22.0"); fileExists(h) {
		return h
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	t.Fatal("no helm: set HELM, run 'make helm', or put helm on PATH")
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Run runs a command in dir (2 minutes at most) and returns its combined
// output; it fails the test when the command fails.
func Run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ChartRelease is the release name the monitoring tests render the chart
// with: its full name is "webhook-operator", so the metrics job of its
// ServiceMonitor is "webhook-operator-metrics".
const ChartRelease = "webhook-operator"

// RenderedRules renders the chart's PrometheusRule with the given extra
// --set values and returns its spec as a Prometheus rule file (groups:),
// what promtool reads.
func RenderedRules(t testing.TB, sets ...string) []byte {
	t.Helper()
	args := []string{"template", ChartRelease, "charts/webhook-operator", "--show-only", "templates/prometheusrule.yaml",
		"--set", "metrics.prometheusRule.enabled=true"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out := Run(t, RepoRoot(), Helm(t), args...)
	var rule struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal([]byte(out), &rule); err != nil {
		t.Fatalf("the rendered PrometheusRule: %v\n%s", err, out)
	}
	if rule.Kind != "PrometheusRule" {
		t.Fatalf("rendered a %q, not a PrometheusRule", rule.Kind)
	}
	file, err := yaml.JSONToYAML(rule.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return file
}

// RuleExprs returns the expressions of a rule file's rules.
func RuleExprs(t testing.TB, file []byte) []string {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(file, &f); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// DashboardPath is the generated dashboard the chart ships.
func DashboardPath() string {
	return filepath.Join(RepoRoot(), "charts", "webhook-operator", "dashboards", "webhook-operator.json")
}

// DashboardQuery is one PromQL query of the dashboard, where it is.
type DashboardQuery struct {
	Where string
	// Expr is the query with Grafana's variables in it.
	Expr string
}

// labelValues is a Grafana variable query: label_values(<selector>, label).
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// DashboardQueries returns every PromQL query of the dashboard: each
// panel's targets, and the selector of each variable's label_values().
func DashboardQueries(t testing.TB) []DashboardQuery {
	t.Helper()
	data, err := os.ReadFile(DashboardPath())
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	var out []DashboardQuery
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			out = append(out, DashboardQuery{Where: "panel " + p.Title + " query " + q.RefID, Expr: q.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		s, _ := v.Query.(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("variable %s: query %v is not label_values(<selector>, <label>)", v.Name, v.Query)
		}
		out = append(out, DashboardQuery{Where: "variable " + v.Name, Expr: m[1]})
	}
	return out
}

// grafanaVars are the values the dashboard's variables are replaced with to
// make plain PromQL of its queries.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "2m",
	"$__range", "6h",
	"$namespace", ".*",
	"$webhook", ".*",
)

// PromQL returns the query with Grafana's variables replaced by values,
// and false if a '$' is left (a variable the dashboard does not define).
func (q DashboardQuery) PromQL() (string, bool) {
	s := grafanaVars.Replace(q.Expr)
	return s, !strings.Contains(s, "$")
}

// metricName matches the operator's metric names in an expression.
var metricName = regexp.MustCompile(`\bwablast_[a-z0-9_]+`)

// MetricNames returns the operator's metrics the expressions use, sorted,
// each once: histograms by their name without _bucket, _sum or _count.
func MetricNames(exprs ...string) []string {
	var out []string
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				m = strings.TrimSuffix(m, suffix)
			}
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ExposedFamilies returns the metric families in a Prometheus text
// exposition (each family's TYPE line), by name.
func ExposedFamilies(exposition []byte) map[string]string {
	out := map[string]string{}
	for _, line := range bytes.Split(exposition, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

// DashboardRulesFile returns the dashboard's queries as a Prometheus rule
// file of recording rules, with Grafana's variables replaced: `promtool
// check rules` on it parses every query. It fails the test when a query
// uses a variable the dashboard does not define.
func DashboardRulesFile(t testing.TB) []byte {
	t.Helper()
	queries := DashboardQueries(t)
	if len(queries) == 0 {
		t.Fatal("no queries in the dashboard")
	}
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	rules := make([]rule, 0, len(queries))
	for i, q := range queries {
		expr, ok := q.PromQL()
		if !ok {
			t.Fatalf("%s: a variable the dashboard does not define is left in %q", q.Where, expr)
		}
		rules = append(rules, rule{Record: "dashboard:query_" + strconv.Itoa(i), Expr: expr})
	}
	file, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	return file
}
