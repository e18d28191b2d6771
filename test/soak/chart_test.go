//go:build soak

package soak

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chart describes chart.svg: RSS and the data directory's size over time.
type chart struct {
	Title    string
	Subtitle string
	Samples  []sample
	// Outage is the receiver's outage from the start of posting (0: none).
	Outage time.Duration
	// PostingEnd is when posting stopped, from its start.
	PostingEnd time.Duration
}

// Layout of the SVG, in pixels.
const (
	chartW, chartH                   = 960, 540
	plotL, plotR, plotT, plotB       = 80, 930, 96, 470 // the plot area's edges
	colorRSS, colorDisk, colorOutage = "#1f5fbf", "#d9730d", "#d62728"
	colorGrid, colorAxis, colorText  = "#e3e3e3", "#444444", "#222222"
	fontFamily                       = "DejaVu Sans, Helvetica, Arial, sans-serif"
	legendY                          = 80
)

// svg renders the chart as a standalone SVG document (no scripts, no
// external resources): two lines in MiB against minutes since posting
// started, grid, labelled axes, a legend, the outage shaded and the end of
// posting marked.
func (c chart) svg() []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	var xMax, yMax float64
	for _, s := range c.Samples {
		xMax = math.Max(xMax, s.At.Minutes())
		yMax = math.Max(yMax, math.Max(mib(s.RSS), mib(s.DataDir)))
	}
	xMax = math.Max(xMax, math.Max(c.PostingEnd.Minutes(), c.Outage.Minutes()))
	xStep := niceStep(xMax, 8)
	xMax = math.Max(xStep, math.Ceil(xMax/xStep-1e-9)*xStep)
	yStep := niceStep(yMax*1.05, 6)
	yMax = math.Max(yStep, math.Ceil(yMax*1.05/yStep-1e-9)*yStep)
	px := func(minutes float64) float64 { return plotL + (plotR-plotL)*minutes/xMax }
	py := func(v float64) float64 { return plotB - (plotB-plotT)*v/yMax }

	w(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	w(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="%s" font-size="13">`+"\n", chartW, chartH, chartW, chartH, fontFamily)
	w("<title>%s</title>\n", esc(c.Title))
	w(`<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`+"\n", chartW, chartH)
	w(`<text x="%d" y="30" font-size="18" font-weight="bold" fill="%s">%s</text>`+"\n", plotL, colorText, esc(c.Title))
	w(`<text x="%d" y="52" font-size="12" fill="#555555">%s</text>`+"\n", plotL, esc(c.Subtitle))

	// The outage, shaded, under everything else.
	if c.Outage > 0 {
		x1 := px(math.Min(c.Outage.Minutes(), xMax))
		w(`<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" fill-opacity="0.12"/>`+"\n", px(0), plotT, x1-px(0), plotB-plotT, colorOutage)
	}
	// Grid and tick labels.
	for v := 0.0; v <= yMax+1e-9; v += yStep {
		y := py(v)
		w(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="1"/>`+"\n", plotL, y, plotR, y, colorGrid)
		w(`<text x="%d" y="%.1f" text-anchor="end" fill="%s">%s</text>`+"\n", plotL-8, y+4, colorText, tickLabel(v, yStep))
	}
	for v := 0.0; v <= xMax+1e-9; v += xStep {
		x := px(v)
		w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="1"/>`+"\n", x, plotT, x, plotB, colorGrid)
		w(`<text x="%.1f" y="%d" text-anchor="middle" fill="%s">%s</text>`+"\n", x, plotB+20, colorText, tickLabel(v, xStep))
	}
	// Axes and their labels.
	w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5"/>`+"\n", plotL, plotB, plotR, plotB, colorAxis)
	w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5"/>`+"\n", plotL, plotT, plotL, plotB, colorAxis)
	w(`<text x="%d" y="%d" text-anchor="middle" fill="%s">minutes since posting started</text>`+"\n", (plotL+plotR)/2, plotB+50, colorText)
	w(`<text x="%d" y="%d" text-anchor="middle" fill="%s" transform="rotate(-90 %d %d)">MiB</text>`+"\n", 26, (plotT+plotB)/2, colorText, 26, (plotT+plotB)/2)

	// The end of posting.
	if c.PostingEnd > 0 {
		x := px(c.PostingEnd.Minutes())
		w(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="1.2" stroke-dasharray="5,4"/>`+"\n", x, plotT, x, plotB, colorAxis)
		tx, anchor := x+5, "start"
		if x > plotR-110 {
			tx, anchor = x-5, "end"
		}
		w(`<text x="%.1f" y="%d" font-size="12" fill="%s" text-anchor="%s">posting stopped</text>`+"\n", tx, plotT+16, colorAxis, anchor)
	}

	// The two series, each a polyline with a dot per sample.
	series := []struct {
		name, color string
		value       func(sample) float64
	}{
		{"manager RSS (VmRSS)", colorRSS, func(s sample) float64 { return mib(s.RSS) }},
		{"data directory size (--data-dir)", colorDisk, func(s sample) float64 { return mib(s.DataDir) }},
	}
	for _, sr := range series {
		var pts []string
		for _, s := range c.Samples {
			if s.At < 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.At.Minutes()), py(sr.value(s))))
		}
		if len(pts) > 1 {
			w(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2.2" stroke-linejoin="round"/>`+"\n", strings.Join(pts, " "), sr.color)
		}
		for _, p := range pts {
			x, y, _ := strings.Cut(p, ",")
			w(`<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, sr.color)
		}
	}

	// The legend, in one row above the plot, where it hides no data.
	x := plotL
	for _, sr := range series {
		w(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", x, legendY-4, x+26, legendY-4, sr.color)
		w(`<text x="%d" y="%d" fill="%s">%s</text>`+"\n", x+34, legendY, colorText, esc(sr.name))
		x += 34 + 8*len(sr.name) + 24
	}
	if c.Outage > 0 {
		w(`<rect x="%d" y="%d" width="26" height="12" fill="%s" fill-opacity="0.25"/>`+"\n", x, legendY-11, colorOutage)
		w(`<text x="%d" y="%d" fill="%s">receiver outage (503 to every request)</text>`+"\n", x+34, legendY, colorText)
	}
	w("</svg>\n")
	return b.Bytes()
}

// niceStep returns a step of 1, 2 or 5 times a power of ten that divides
// span into at most n intervals.
func niceStep(span float64, n int) float64 {
	if !(span > 0) {
		return 1
	}
	raw := span / float64(n)
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*pow >= raw {
			return m * pow
		}
	}
	return 10 * pow
}

// tickLabel writes v with as many decimals as step needs.
func tickLabel(v, step float64) string {
	dec := 0
	if step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	return fmt.Sprintf("%.*f", dec, v)
}

func esc(s string) string { return html.EscapeString(s) }

// TestChartSVG renders a chart from made-up samples and checks that it is
// well-formed XML with both series, the axes' labels, the legend and the
// outage; the rendering is written to $SOAK_CHART_OUT when set, for a look.
func TestChartSVG(t *testing.T) {
	var samples []sample
	for i := range 15 {
		samples = append(samples, sample{At: time.Duration(i) * 30 * time.Second, RSS: int64(60+i%3) << 20, DataDir: int64(i*i) << 18})
	}
	c := chart{Title: "soak <test> & chart", Subtitle: "made-up samples", Samples: samples, Outage: 3 * time.Minute, PostingEnd: 5 * time.Minute}
	out := c.svg()
	dec := xml.NewDecoder(bytes.NewReader(out))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("chart.svg is not well-formed XML: %v\n%s", err, out)
		}
	}
	for _, want := range []string{"<polyline", "manager RSS", "data directory size", "minutes since posting started", ">MiB<", "receiver outage", "posting stopped", "soak &lt;test&gt; &amp; chart"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("chart.svg lacks %q", want)
		}
	}
	if dir := os.Getenv("SOAK_CHART_OUT"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "chart-test.svg"), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
