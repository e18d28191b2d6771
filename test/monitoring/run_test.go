package monitoring

import (
	"context"
	"os/exec"
	"time"
)

// runOutput runs a command that is expected to fail, in dir, and returns
// its combined output and error.
func runOutput(dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}
