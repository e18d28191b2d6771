//go:build soak

// Package soak runs the manager binary as a separate process against a
// local control plane under a steady open-loop load for a while, optionally
// through a receiver's outage, and reports whether its memory and its data
// directory stay flat: RSS, Go heap, goroutines, open files and the
// embedded store's size sampled every 30 s, heap and goroutine profiles, and
// every accepted event checked for delivery and content at the end.
//
// Run it with `make soak` (knobs: SOAK_DURATION, SOAK_RATE, SOAK_IDS,
// SOAK_FAIL, SOAK_OUTAGE, SOAK_POLICY, SOAK_HEALTHY, SOAK_OUT and a few
// more, see config_test.go and docs/development.md, "Soak runs"). It writes
// report.md, samples.csv, chart.svg and the profiles into SOAK_OUT. The test
// fails only when an accepted event is lost or delivered with other content;
// memory is reported, with a verdict line, not asserted.
package soak

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

var (
	envOnce sync.Once
	env     *testutil.Env
	envErr  error
	// tmp holds the manager binary when TestMain builds it.
	tmp string
)

func TestMain(m *testing.M) {
	code := m.Run()
	env.Stop()
	if tmp != "" {
		_ = os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// startEnv starts the control plane once, for the tests that need it (the
// chart test does not).
func startEnv(t *testing.T) *testutil.Env {
	t.Helper()
	envOnce.Do(func() {
		start := time.Now()
		env, envErr = testutil.StartEnv()
		if envErr == nil {
			t.Logf("control plane up in %s", time.Since(start).Round(time.Millisecond))
		}
	})
	if envErr != nil {
		t.Fatal(envErr)
	}
	return env
}

// managerBinary returns $SOAK_MANAGER_BIN (make soak sets it to bin/manager)
// or builds the manager from this tree into a temporary directory.
func managerBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("SOAK_MANAGER_BIN"); bin != "" {
		return bin
	}
	var err error
	if tmp, err = os.MkdirTemp("", "wablast-soak-"); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "manager")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/manager")
	cmd.Dir = testutil.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the manager: %v\n%s", err, out)
	}
	return bin
}
