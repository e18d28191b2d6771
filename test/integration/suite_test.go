// Package integration runs the operator's real wiring (internal/operator:
// controller, dispatcher with embedded NATS, status writer) against a real
// API server, with receivers on loopback.
package integration

import (
	"os"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/operator/operatortest"
	"github.com/wablast/webhook-operator/internal/testutil"
)

var env *testutil.Env

func TestMain(m *testing.M) { os.Exit(testutil.RunTests(m, &env)) }

// running is one operator (manager + store) scoped to a namespace.
type running struct {
	in     *operatortest.Instance
	op     *operator.Operator
	writes *operatortest.StatusWrites
	t      *testing.T
}

func (r *running) stop() {
	if err := r.in.Stop(); err != nil {
		r.t.Errorf("manager: %v", err)
	}
}

// startOperator runs the operator's wiring for namespace ns on dataDir.
func startOperator(t *testing.T, ns, dataDir string) *running {
	t.Helper()
	return startOperatorFor(t, []string{ns}, dataDir)
}

// startOperatorFor runs one operator serving every namespace of nss.
func startOperatorFor(t *testing.T, nss []string, dataDir string) *running {
	t.Helper()
	cfg := operatortest.Config(dataDir)
	cfg.WatchNamespaces = nss
	in, err := operatortest.Start(env.Config, nss[0], cfg, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{in: in, op: in.Op, writes: in.Writes, t: t}
	t.Cleanup(r.stop)
	return r
}
