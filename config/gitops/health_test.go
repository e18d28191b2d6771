package gitops

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite argocd/argocd-cm-patch.yaml from argocd/health.lua")

const (
	argoDir        = "argocd"
	healthScript   = "argocd/health.lua"
	healthTests    = "argocd/health_test.yaml"
	configMapPatch = "argocd/argocd-cm-patch.yaml"
	// healthKey is the argocd-cm key of the health check: resource.customizations.health.<group>_<kind>.
	healthKey = "resource.customizations.health.webhooks.wablast.io_WebhookConfig"
	fluxDir   = "flux"
)

// healthTestFile is Argo CD's health_test.yaml format.
type healthTestFile struct {
	Tests []healthTest `json:"tests"`
}

type healthTest struct {
	HealthStatus struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	} `json:"healthStatus"`
	InputPath string `json:"inputPath"`
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func loadHealthTests(t *testing.T) []healthTest {
	t.Helper()
	var file healthTestFile
	if err := yaml.UnmarshalStrict(readFile(t, healthTests), &file); err != nil {
		t.Fatalf("%s: %v", healthTests, err)
	}
	if len(file.Tests) == 0 {
		t.Fatalf("%s lists no tests", healthTests)
	}
	return file.Tests
}

// loadObject reads a test object: YAML into map[string]any (numbers are
// float64; toLua also accepts the int64 of Argo CD's unstructured objects).
func loadObject(t *testing.T, inputPath string) map[string]any {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal(readFile(t, filepath.Join(argoDir, inputPath)), &obj); err != nil {
		t.Fatalf("%s: %v", inputPath, err)
	}
	return obj
}

// toLua converts a decoded JSON/YAML value to Lua: maps become tables,
// slices 1-based array tables, numbers LNumber, and so on.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case map[string]any:
		table := l.NewTable()
		for key, value := range v {
			table.RawSetString(key, toLua(l, value))
		}
		return table
	case []any:
		table := l.NewTable()
		for _, value := range v {
			table.Append(toLua(l, value))
		}
		return table
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	default:
		panic(fmt.Sprintf("toLua: unsupported type %T", v))
	}
}

// runHealth runs script like Argo CD's Lua VM does: only the package, base
// and table libraries are open, obj is a global, the script has a second to
// finish, and its return value must be a table with status and message.
func runHealth(script string, obj map[string]any) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, want a table", l.Get(-1).Type())
	}
	st, ok := hs.RawGetString("status").(lua.LString)
	if !ok {
		return "", "", errors.New("hs.status is not a string")
	}
	msg, ok := hs.RawGetString("message").(lua.LString)
	if !ok {
		return "", "", errors.New("hs.message is not a string")
	}
	return string(st), string(msg), nil
}

// TestArgoCDHealthCheck runs health.lua against every case of health_test.yaml.
func TestArgoCDHealthCheck(t *testing.T) {
	script := string(readFile(t, healthScript))
	for _, tc := range loadHealthTests(t) {
		t.Run(tc.InputPath, func(t *testing.T) {
			gotStatus, gotMessage, err := runHealth(script, loadObject(t, tc.InputPath))
			if err != nil {
				t.Fatalf("running %s: %v", healthScript, err)
			}
			if gotStatus != tc.HealthStatus.Status {
				t.Errorf("status = %q, want %q", gotStatus, tc.HealthStatus.Status)
			}
			if gotMessage != tc.HealthStatus.Message {
				t.Errorf("message = %q, want %q", gotMessage, tc.HealthStatus.Message)
			}
		})
	}
}

// TestArgoCDHealthCheckCoverage keeps health_test.yaml from losing the cases
// the health check exists for, and every testdata object tested.
func TestArgoCDHealthCheckCoverage(t *testing.T) {
	required := []struct {
		inputPath, status, messagePrefix string
	}{
		{"testdata/healthy.yaml", "Healthy", "The endpoint is live"},
		{"testdata/progressing.yaml", "Progressing", "Waiting for the operator to reconcile"},
		{"testdata/progressing_generation_ahead.yaml", "Progressing", "Waiting for the operator to reconcile"},
		{"testdata/degraded.yaml", "Degraded", "SecretNotFound: "},
		{"testdata/suspended.yaml", "Suspended", "Deliveries are disabled (spec.enabled is false)"},
		{"testdata/suspended_paused.yaml", "Suspended", "Deliveries are paused (spec.paused is true)"},
		{"testdata/healthy_deliveries_failing.yaml", "Healthy", "Ready; deliveries failing: DeliveryFailing"},
	}
	tests := loadHealthTests(t)
	listed := map[string]healthTest{}
	for _, tc := range tests {
		if _, dup := listed[tc.InputPath]; dup {
			t.Errorf("%s is listed twice", tc.InputPath)
		}
		listed[tc.InputPath] = tc
	}
	for _, r := range required {
		tc, ok := listed[r.inputPath]
		switch {
		case !ok:
			t.Errorf("%s: no test of %s", healthTests, r.inputPath)
		case tc.HealthStatus.Status != r.status || !strings.HasPrefix(tc.HealthStatus.Message, r.messagePrefix):
			t.Errorf("%s: %s expects %s %q, want %s %q...", healthTests, r.inputPath,
				tc.HealthStatus.Status, tc.HealthStatus.Message, r.status, r.messagePrefix)
		}
	}
	files, err := filepath.Glob(filepath.Join(argoDir, "testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		rel := filepath.ToSlash(strings.TrimPrefix(f, argoDir+string(filepath.Separator)))
		if _, ok := listed[rel]; !ok {
			t.Errorf("%s is not listed in %s", rel, healthTests)
		}
	}
}

// TestTestdataAreWebhookConfigs decodes every test object strictly into the
// API type, so that a misspelt or removed field in testdata fails here
// instead of silently testing nothing.
func TestTestdataAreWebhookConfigs(t *testing.T) {
	for _, tc := range loadHealthTests(t) {
		var whc webhooksv1alpha1.WebhookConfig
		if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(argoDir, tc.InputPath)), &whc); err != nil {
			t.Errorf("%s: %v", tc.InputPath, err)
			continue
		}
		if whc.APIVersion != webhooksv1alpha1.GroupVersion.String() || whc.Kind != "WebhookConfig" {
			t.Errorf("%s: %s %s, want %s WebhookConfig", tc.InputPath, whc.APIVersion, whc.Kind, webhooksv1alpha1.GroupVersion)
		}
	}
}

// TestKstatus pins what Flux health checks and `kubectl wait` see for every
// test object: the kstatus column of the table in docs/gitops.md.
func TestKstatus(t *testing.T) {
	want := map[string]status.Status{
		"testdata/healthy.yaml":                    status.CurrentStatus,
		"testdata/healthy_deliveries_failing.yaml": status.CurrentStatus,
		"testdata/healthy_endpoint_gone.yaml":      status.CurrentStatus,
		"testdata/suspended.yaml":                  status.CurrentStatus,
		// kstatus has no Suspended: a paused resource is Ready and Current.
		"testdata/suspended_paused.yaml":             status.CurrentStatus,
		"testdata/progressing.yaml":                  status.InProgressStatus,
		"testdata/progressing_generation_ahead.yaml": status.InProgressStatus,
		"testdata/progressing_reconciling.yaml":      status.InProgressStatus,
		"testdata/degraded.yaml":                     status.FailedStatus,
		"testdata/degraded_disabled.yaml":            status.FailedStatus,
		// Ready=False without Stalled: kstatus waits, Argo CD says Degraded.
		// The operator always sets Stalled together with Ready=False.
		"testdata/degraded_ready_false.yaml": status.InProgressStatus,
		// Objects the operator never produces: kstatus assumes a resource
		// without observedGeneration or conditions is Current.
		"testdata/progressing_no_status.yaml": status.CurrentStatus,
		"testdata/progressing_no_ready.yaml":  status.CurrentStatus,
	}
	for _, tc := range loadHealthTests(t) {
		t.Run(tc.InputPath, func(t *testing.T) {
			expected, ok := want[tc.InputPath]
			if !ok {
				t.Fatalf("no expected kstatus for %s: add it here and to the table in docs/gitops.md", tc.InputPath)
			}
			js, err := yaml.YAMLToJSON(readFile(t, filepath.Join(argoDir, tc.InputPath)))
			if err != nil {
				t.Fatal(err)
			}
			var u unstructured.Unstructured
			if err := u.UnmarshalJSON(js); err != nil {
				t.Fatal(err)
			}
			res, err := status.Compute(&u)
			if err != nil {
				t.Fatalf("kstatus: %v", err)
			}
			if res.Status != expected {
				t.Errorf("kstatus = %s (%s), want %s", res.Status, res.Message, expected)
			}
		})
	}
}

// TestArgoCDConfigMapPatch checks that the script inlined in the argocd-cm
// patch is byte for byte health.lua. With -update it rewrites the inlined
// copy: everything after the key's line.
func TestArgoCDConfigMapPatch(t *testing.T) {
	script := readFile(t, healthScript)
	patch := readFile(t, configMapPatch)
	if *update {
		patch = inlineScript(t, patch, script)
		if err := os.WriteFile(configMapPatch, patch, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var cm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(patch, &cm); err != nil {
		t.Fatalf("%s: %v", configMapPatch, err)
	}
	if cm.APIVersion != "v1" || cm.Kind != "ConfigMap" || cm.Metadata.Name != "argocd-cm" {
		t.Errorf("%s is a %s %s named %q, want a v1 ConfigMap named argocd-cm", configMapPatch, cm.APIVersion, cm.Kind, cm.Metadata.Name)
	}
	if cm.Metadata.Namespace != "" {
		t.Errorf("%s sets metadata.namespace %q: leave it out so the patch applies wherever Argo CD is installed", configMapPatch, cm.Metadata.Namespace)
	}
	inlined, ok := cm.Data[healthKey]
	if !ok {
		t.Fatalf("%s has no data key %s", configMapPatch, healthKey)
	}
	if inlined != string(script) {
		t.Errorf("the script inlined in %s differs from %s%s; run\n\tgo test ./config/gitops/ -run TestArgoCDConfigMapPatch -update",
			configMapPatch, healthScript, firstDifference(inlined, string(script)))
	}
}

// inlineScript replaces everything after the health key's line of patch with
// script as the key's literal block, indented by four spaces.
func inlineScript(t *testing.T, patch, script []byte) []byte {
	t.Helper()
	keyLine := []byte("  " + healthKey + ": |\n")
	i := bytes.Index(patch, keyLine)
	if i < 0 {
		t.Fatalf("%s: no line %q to inline the script after", configMapPatch, keyLine)
	}
	var out bytes.Buffer
	out.Write(patch[:i+len(keyLine)])
	for _, line := range strings.SplitAfter(string(script), "\n") {
		if strings.TrimSpace(line) != "" {
			out.WriteString("    ")
		}
		out.WriteString(line)
	}
	return out.Bytes()
}

func firstDifference(got, want string) string {
	a, b := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf(" at line %d:\n\tinlined: %q\n\tscript:  %q", i+1, a[i], b[i])
		}
	}
	return fmt.Sprintf(" (%d lines inlined, %d in the script)", len(a), len(b))
}

// fluxObject is the part of a Flux object the example test looks at.
type fluxObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		DependsOn []dependency `json:"dependsOn"`
		SourceRef struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"sourceRef"`
		Timeout      string        `json:"timeout"`
		Wait         bool          `json:"wait"`
		HealthChecks []healthCheck `json:"healthChecks"`
	} `json:"spec"`
}

type dependency struct {
	Name string `json:"name"`
}

type healthCheck struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func loadFluxObjects(t *testing.T) []fluxObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(fluxDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var objects []fluxObject
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for doc := range strings.SplitSeq(string(readFile(t, f)), "\n---\n") {
			var obj fluxObject
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if obj.Kind != "" {
				objects = append(objects, obj)
			}
		}
	}
	return objects
}

// TestFluxExample checks the Flux example's shape: a Kustomization that
// health-checks WebhookConfigs, with a timeout, after the operator's own
// Kustomization, from a GitRepository defined next to it.
func TestFluxExample(t *testing.T) {
	objects := loadFluxObjects(t)
	sources := map[string]bool{}
	kustomizations := map[string]fluxObject{}
	for _, o := range objects {
		switch o.Kind {
		case "GitRepository":
			if o.APIVersion != "source.toolkit.fluxcd.io/v1" {
				t.Errorf("GitRepository %s: apiVersion %s, want source.toolkit.fluxcd.io/v1", o.Metadata.Name, o.APIVersion)
			}
			sources[o.Metadata.Name] = true
		case "Kustomization":
			if o.APIVersion != "kustomize.toolkit.fluxcd.io/v1" {
				t.Errorf("Kustomization %s: apiVersion %s, want kustomize.toolkit.fluxcd.io/v1", o.Metadata.Name, o.APIVersion)
			}
			kustomizations[o.Metadata.Name] = o
		default:
			t.Errorf("unexpected %s %s in %s", o.Kind, o.Metadata.Name, fluxDir)
		}
	}
	for name, k := range kustomizations {
		if k.Spec.SourceRef.Kind != "GitRepository" || !sources[k.Spec.SourceRef.Name] {
			t.Errorf("Kustomization %s: sourceRef %s/%s is not a GitRepository of the example", name, k.Spec.SourceRef.Kind, k.Spec.SourceRef.Name)
		}
		for _, d := range k.Spec.DependsOn {
			if _, ok := kustomizations[d.Name]; !ok {
				t.Errorf("Kustomization %s: dependsOn %s, which the example does not define", name, d.Name)
			}
		}
	}

	webhooks, ok := kustomizations["shop-webhooks"]
	if !ok {
		t.Fatalf("no Kustomization shop-webhooks in %s", fluxDir)
	}
	checksWebhookConfigs := webhooks.Spec.Wait || slices.ContainsFunc(webhooks.Spec.HealthChecks, func(h healthCheck) bool {
		return h.APIVersion == webhooksv1alpha1.GroupVersion.String() && h.Kind == "WebhookConfig"
	})
	if !checksWebhookConfigs {
		t.Error("shop-webhooks neither waits nor health-checks WebhookConfigs")
	}
	if _, err := time.ParseDuration(webhooks.Spec.Timeout); err != nil {
		t.Errorf("shop-webhooks: timeout %q: %v", webhooks.Spec.Timeout, err)
	}
	if !slices.Contains(webhooks.Spec.DependsOn, dependency{Name: "webhook-operator"}) {
		t.Error("shop-webhooks does not dependsOn the operator's Kustomization webhook-operator")
	}
	if op, ok := kustomizations["webhook-operator"]; !ok || !op.Spec.Wait {
		t.Error("the operator's Kustomization webhook-operator is missing or does not wait: dependsOn would not wait for the CRD and the manager")
	}
}
