package ingest

import (
	"flag"
	"os"
	"testing"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// env is the control plane of the envtest integration tests.
var env *testutil.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if fuzzing() {
		// The fuzzer runs only FuzzDecodeEvent, in many worker processes:
		// none of them needs a control plane.
		os.Exit(m.Run())
	}
	os.Exit(testutil.RunTests(m, &env))
}

// fuzzing reports whether this process runs the fuzzer (go test -fuzz) or
// is one of its workers.
func fuzzing() bool {
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			return true
		}
	}
	return false
}

// needEnv skips a test that needs the control plane when it is not
// running, which happens only under the fuzzer.
func needEnv(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip("no control plane while fuzzing")
	}
}
