package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chart is a figure of a measurement, written as an SVG beside the report.
type chart struct {
	// file is the SVG's name, such as "throughput.svg".
	file, title, alt string
	// bars: a bar chart of labelled values in unit; or series: lines of
	// latency (ms) by percentile.
	unit   string
	bars   []bar
	series []series
}

type bar struct {
	label string
	value float64
}

type series struct {
	name string
	// sorted latencies; the line is their percentiles 1 to 99.
	sorted []time.Duration
}

var palette = []color.Color{
	color.RGBA{R: 0x4c, G: 0x72, B: 0xb0, A: 0xff},
	color.RGBA{R: 0xdd, G: 0x84, B: 0x52, A: 0xff},
	color.RGBA{R: 0x55, G: 0xa8, B: 0x68, A: 0xff},
	color.RGBA{R: 0xc4, G: 0x4e, B: 0x52, A: 0xff},
	color.RGBA{R: 0x81, G: 0x72, B: 0xb3, A: 0xff},
}

// write renders c into dir as c.file.
func (c chart) write(dir string) error {
	p := plot.New()
	p.Title.Text = c.title
	switch {
	case len(c.bars) > 0:
		values := make(plotter.Values, len(c.bars))
		labels := make([]string, len(c.bars))
		for i, b := range c.bars {
			values[i], labels[i] = b.value, b.label
		}
		bc, err := plotter.NewBarChart(values, vg.Points(36))
		if err != nil {
			return err
		}
		bc.Color = palette[0]
		bc.LineStyle.Width = 0
		p.Add(bc)
		p.NominalX(labels...)
		p.Y.Label.Text = c.unit
		p.Y.Min = 0
		p.Add(plotter.NewGrid())
	case len(c.series) > 0:
		for i, s := range c.series {
			pts := make(plotter.XYs, 0, 99)
			for q := 1; q <= 99; q++ {
				pts = append(pts, plotter.XY{X: float64(q), Y: float64(percentile(s.sorted, float64(q))) / float64(time.Millisecond)})
			}
			line, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			line.Color = palette[i%len(palette)]
			line.Width = vg.Points(1.5)
			p.Add(line)
			p.Legend.Add(s.name, line)
		}
		p.Legend.Top, p.Legend.Left = true, true
		p.X.Label.Text = "percentile"
		p.Y.Label.Text = "ms"
		p.Add(plotter.NewGrid())
	default:
		return fmt.Errorf("chart %s has no data", c.file)
	}
	return p.Save(7*vg.Inch, 3.5*vg.Inch, filepath.Join(dir, c.file))
}

// writeCharts writes every chart of the results into dir, which it
// creates, and returns the Markdown that shows them.
func writeCharts(dir, rel string, results []*result) (string, error) {
	var md string
	for _, res := range results {
		for _, c := range res.charts {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return "", err
			}
			if err := c.write(dir); err != nil {
				return "", fmt.Errorf("chart %s: %w", c.file, err)
			}
			md += fmt.Sprintf("![%s](%s/%s)\n\n", c.alt, rel, c.file)
		}
	}
	return md, nil
}
