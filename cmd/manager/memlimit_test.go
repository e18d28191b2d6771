package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadLimit(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]int64{
		"536870912\n":         536870912,
		"max\n":               0,
		"9223372036854771712": 0, // cgroup v1 without a limit
		"garbage":             0,
	} {
		p := filepath.Join(dir, "limit")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := readLimit(p); got != want {
			t.Errorf("readLimit(%q) = %d, want %d", content, got, want)
		}
	}
	if got := readLimit(filepath.Join(dir, "absent")); got != 0 {
		t.Errorf("an absent file gives %d", got)
	}
}
