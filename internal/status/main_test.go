package status

import (
	"os"
	"testing"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// env is the control plane of the tests that apply status.
var env *testutil.Env

func TestMain(m *testing.M) { os.Exit(testutil.RunTests(m, &env)) }
