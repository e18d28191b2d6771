package main

import (
	"os"
	"strings"
	"testing"
)

// docs/benchmarks.md ends with history.md, as the next `make bench` writes
// it: a finding added to the report by hand and not to history.md would be
// lost by that run.
func TestTheReportEndsWithTheHistory(t *testing.T) {
	report, err := os.ReadFile("../../docs/benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(report), "\n"+history) {
		t.Error("docs/benchmarks.md does not end with hack/bench/history.md: write hand-kept findings into history.md and copy them into the report (or run make bench)")
	}
}
