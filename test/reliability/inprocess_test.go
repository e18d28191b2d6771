//go:build reliability

package reliability

import (
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/operator/operatortest"
)

// inProcess is the operator's real wiring (internal/operator, as
// cmd/manager uses it) running inside the test process, scoped to one
// namespace.
type inProcess struct {
	in *operatortest.Instance
	op *operator.Operator
}

func startInProcess(t *testing.T, ns, dataDir string) *inProcess {
	t.Helper()
	in, err := operatortest.Start(env.Config, ns, operatortest.Config(dataDir), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Stop(); err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return &inProcess{in: in, op: in.Op}
}
