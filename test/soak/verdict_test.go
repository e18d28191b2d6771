//go:build soak

package soak

import (
	"testing"
	"time"
)

func samplesOf(rss ...float64) []*sample {
	out := make([]*sample, len(rss))
	for i, v := range rss {
		out[i] = &sample{At: 2*time.Minute + time.Duration(i)*30*time.Second, RSS: int64(v * (1 << 20))}
	}
	return out
}

// The verdict holds the highest RSS after the first 5 minutes past the
// warm-up to 20% over the highest within them: a GC cycle's low sample at
// the start does not fail a flat run, and growth does.
func TestTheVerdictComparesPeaksNotOneSample(t *testing.T) {
	flatRun := []float64{191, 236, 200, 210, 225, 205, 199, 212, 230, 201, 235, 207, 228, 203, 233}
	if f := flatness(samplesOf(flatRun...), 2*time.Minute); !f.flat || f.refMax != 236<<20 || f.laterMax != 235<<20 {
		t.Errorf("a flat run with a low first sample: %+v", f)
	}
	growing := []float64{191, 200, 195, 205, 199, 203, 196, 201, 230, 240, 245, 250, 252, 251, 253}
	if f := flatness(samplesOf(growing...), 2*time.Minute); f.flat {
		t.Errorf("a run growing by a quarter: %+v", f)
	}
	over := []float64{200, 210, 205, 208, 202, 209, 204, 206, 230, 258, 210, 205, 207, 209, 203}
	if f := flatness(samplesOf(over...), 2*time.Minute); f.flat {
		t.Errorf("a run over 256 MiB once: %+v", f)
	}
}
