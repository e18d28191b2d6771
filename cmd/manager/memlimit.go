package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// setMemoryLimit gives the Go runtime a soft memory limit of 85% of the
// container's memory limit, unless GOMEMLIMIT is set or there is no limit.
// Without one the garbage collector lets the heap double between
// collections (GOGC=100) and the runtime keeps freed memory mapped for a
// while, so a process whose live heap is well under its limit can still be
// OOM-killed at a peak; with one it collects harder, and returns memory
// sooner, as the limit nears. It returns the limit set, or 0.
func setMemoryLimit() int64 {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return 0
	}
	for _, f := range cgroupMemoryFiles {
		if limit := readLimit(f); limit > 0 {
			soft := limit / 100 * 85
			debug.SetMemoryLimit(soft)
			return soft
		}
	}
	return 0
}

// readLimit reads a cgroup memory limit in bytes; 0 when absent or
// unlimited ("max", or v1's huge sentinel).
func readLimit(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0
	}
	return n
}
