package plugin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/wablast/webhook-operator/internal/testutil"
)

var (
	// env is the control plane of the envtest integration tests.
	env *testutil.Env
	// pluginDir holds the kubectl-webhook binary built for the tests; it goes
	// first on kubectl's PATH.
	pluginDir string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	if pluginDir, err = os.MkdirTemp("", "kubectl-webhook-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(pluginDir) }() // best effort: a temporary directory
	build := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "kubectl-webhook"), "./cmd/kubectl-webhook")
	build.Dir = testutil.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building kubectl-webhook: %v\n%s", err, out)
		return 1
	}
	if env, err = testutil.StartEnv(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	return m.Run()
}
