package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestChartsAreWrittenWithTheirData(t *testing.T) {
	dir := t.TempDir()
	lat := make([]time.Duration, 1000)
	for i := range lat {
		lat[i] = time.Duration(i) * time.Millisecond / 10
	}
	res := &result{charts: []chart{
		{file: "bars.svg", title: "Throughput", unit: "events/s", alt: "bars", bars: []bar{{"one hop", 30000}, {"operator", 12000}}},
		{file: "lines.svg", title: "Latency", alt: "lines", series: []series{{"added", lat}}},
	}}
	md, err := writeCharts(filepath.Join(dir, "benchmarks"), "benchmarks", []*result{res})
	if err != nil {
		t.Fatal(err)
	}
	if md != "![bars](benchmarks/bars.svg)\n\n![lines](benchmarks/lines.svg)\n\n" {
		t.Errorf("markdown %q", md)
	}
	for file, words := range map[string][]string{
		"bars.svg":  {"<svg", "Throughput", "one hop", "operator", "events/s"},
		"lines.svg": {"<svg", "Latency", "added", "percentile", "ms"},
	} {
		b, err := os.ReadFile(filepath.Join(dir, "benchmarks", file))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range words {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s does not contain %q", file, w)
			}
		}
	}
	if _, err := writeCharts(dir, "x", []*result{{charts: []chart{{file: "empty.svg"}}}}); err == nil {
		t.Error("a chart without data was written")
	}
}
