//go:build reliability

// Package reliability breaks the operator on purpose and checks the
// contract's durability and isolation promises hold: kill -9 of the manager,
// misbehaving receivers next to a healthy one, the API server unreachable,
// an external NATS restarted mid-run, and bad input of every kind.
//
// Every test runs a fresh namespace against one envtest control plane
// (bin/k8s/<version>), with its own data directory and loopback receivers.
// The manager runs as the built binary (a subprocess, so it can be killed
// with SIGKILL), except where the in-process wiring (internal/operator) is
// enough. Run it with `make test-reliability`; docs/reliability.md describes
// each test and the results of the last run.
//
// -short shortens the API server outage from 30 s to 10 s.
package reliability

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

var (
	env *testutil.Env
	// managerBin is the manager binary the subprocess tests run: built from
	// this tree into a temporary directory by TestMain, or $RELIABILITY_MANAGER_BIN.
	managerBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "wablast-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(tmp) }() // best effort: a temporary directory

	if managerBin = os.Getenv("RELIABILITY_MANAGER_BIN"); managerBin == "" {
		managerBin = filepath.Join(tmp, "manager")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", managerBin, "./cmd/manager")
		cmd.Dir = testutil.RepoRoot()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		start := time.Now()
		err := cmd.Run()
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "building the manager:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "built %s in %s\n", managerBin, time.Since(start).Round(time.Millisecond))
	}

	start := time.Now()
	env, err = testutil.StartEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	fmt.Fprintf(os.Stderr, "control plane up in %s\n", time.Since(start).Round(time.Millisecond))
	return m.Run()
}
