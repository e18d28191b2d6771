// Package deliverylog tests the delivery log end to end: the operator's real
// wiring (embedded NATS, dispatcher, delivery API server) behind a real
// kube-apiserver with its aggregation layer on, reached with kubectl through
// an APIService, with receivers on loopback.
package deliverylog

import (
	"fmt"
	"os"
	"testing"

	"github.com/wablast/webhook-operator/internal/testutil"
)

var env *testutil.Env

func TestMain(m *testing.M) {
	e, err := testutil.StartEnvWith(testutil.EnvOptions{InstallCRDs: true, Aggregation: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env = e
	code := m.Run()
	e.Stop()
	os.Exit(code)
}
