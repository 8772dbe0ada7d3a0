package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
)

// WriteHTML writes a self-contained page (inline SVG and CSS, no scripts,
// nothing fetched from the network, so it opens anywhere, offline and in
// a CI artifact viewer) with the run's summary and its latency histogram
// on a logarithmic time axis, the bucket layout of Histogram.
func (r *Report) WriteHTML(w io.Writer) error {
	var b strings.Builder
	title := fmt.Sprintf("cardbridge bench, %s, %s", r.Mode, r.StartedAt.UTC().Format("2006-01-02 15:04:05Z"))
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n")
	fmt.Fprintf(&b, "<title>%s</title>\n", html.EscapeString(title))
	b.WriteString(`<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td{padding:2px 12px 2px 0}td:first-child{color:#666}
pre{background:#f6f6f6;padding:1em;white-space:pre-wrap}
svg text{font:11px system-ui,sans-serif;fill:#444}
.bar{fill:#4a7fb5}.grid{stroke:#ddd}.pct{stroke:#c0392b;stroke-dasharray:4 3}.pcttext{fill:#c0392b;paint-order:stroke;stroke:#fff;stroke-width:3px}
</style></head><body>
`)
	fmt.Fprintf(&b, "<h1>%s</h1>\n", html.EscapeString(title))
	l := r.Latency
	rows := [][2]string{
		{"result", map[bool]string{true: "PASS", false: "FAIL: " + strings.Join(r.Problems, "; ")}[r.Passed]},
		{"requests", fmt.Sprintf("%d (%s load)", r.Requests, r.Load)},
		{"throughput", fmt.Sprintf("%s req/s; steady %s req/s", num(r.Throughput.PerSecond), num(r.Throughput.SteadyPerSecond))},
		{"latency", fmt.Sprintf("p50 %s, p90 %s, p99 %s, p99.9 %s, max %s", fmtMS(l.P50MS), fmtMS(l.P90MS), fmtMS(l.P99MS), fmtMS(l.P999MS), fmtMS(l.MaxMS))},
		{"setup", fmt.Sprintf("%d instance(s), in-flight %d, bank latency %s", r.Settings.Instances, r.Settings.InFlight, fmtMS(r.Settings.BankLatencyMS))},
	}
	if bl := r.Baseline; bl != nil {
		rows = append(rows, [2]string{"baseline", fmt.Sprintf("%s commits/s; cardbridge / baseline = %.2f", num(bl.PerSecond), bl.Ratio)})
	}
	b.WriteString("<table>\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td></tr>\n", html.EscapeString(row[0]), html.EscapeString(row[1]))
	}
	b.WriteString("</table>\n<h2>Latency, publish to outcome</h2>\n")
	writeHistogramSVG(&b, r.Histogram, []pctMark{{"p50", l.P50MS}, {"p90", l.P90MS}, {"p99", l.P99MS}, {"p99.9", l.P999MS}})
	b.WriteString("<h2>Report</h2>\n<pre>")
	var text strings.Builder
	_ = r.WriteText(&text)
	b.WriteString(html.EscapeString(text.String()))
	b.WriteString("</pre>\n</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

type pctMark struct {
	label string
	ms    float64
}

// writeHistogramSVG draws the buckets as bars whose width is the bucket's
// span on a log10 axis; the counts are on a linear axis.
func writeHistogramSVG(b *strings.Builder, buckets []HistogramBucket, marks []pctMark) {
	const (
		width, height            = 960, 380
		left, right, top, bottom = 64, 24, 24, 44
		plotW, plotH             = width - left - right, height - top - bottom
	)
	if len(buckets) == 0 {
		b.WriteString("<p>No latencies were recorded.</p>\n")
		return
	}
	const floorMS = 0.001 // the first buckets start at 0; a log axis cannot
	lo := math.Max(buckets[0].LoMS, floorMS)
	hi := buckets[len(buckets)-1].HiMS
	xmin := math.Floor(math.Log10(lo))
	xmax := math.Ceil(math.Log10(hi))
	if xmax <= xmin {
		xmax = xmin + 1
	}
	x := func(v float64) float64 {
		v = math.Max(v, floorMS)
		return left + (math.Log10(v)-xmin)/(xmax-xmin)*plotW
	}
	// Buckets are equally wide in linear terms within a power of two and
	// twice as wide in the next, so on a log axis their widths shrink and
	// then jump. Plotting raw counts would draw that as steps; plotting
	// counts per 1/histSub of a power of two (the width of a bucket at the
	// start of its power) shows the true shape.
	density := func(bk HistogramBucket) float64 {
		lo := math.Max(bk.LoMS, floorMS)
		w := math.Log2(bk.HiMS/lo) * histSub
		if w <= 0 {
			return float64(bk.Count)
		}
		return float64(bk.Count) / w
	}
	var maxDensity float64
	for _, bk := range buckets {
		maxDensity = math.Max(maxDensity, density(bk))
	}
	step := niceStep(maxDensity / 5)
	top_ := math.Ceil(maxDensity/step) * step
	y := func(c float64) float64 { return top + plotH - c/top_*plotH }

	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="latency histogram">`+"\n",
		width, height, width, height)
	// Vertical grid and labels at 1, 2 and 5 of every decade.
	for e := xmin; e <= xmax; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if math.Log10(v) > xmax+1e-9 {
				continue
			}
			px := x(v)
			fmt.Fprintf(b, `<line class="grid" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`+"\n", px, top, px, top+plotH)
			fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px, top+plotH+16, html.EscapeString(fmtMS(v)))
		}
	}
	// Horizontal grid at round values.
	for c := 0.0; c <= top_+step/2; c += step {
		py := y(c)
		fmt.Fprintf(b, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`+"\n", left, py, left+plotW, py)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py+4, strconv.FormatFloat(c, 'f', -1, 64))
	}
	for _, bk := range buckets {
		x0, x1 := x(bk.LoMS), x(bk.HiMS)
		y0 := y(density(bk))
		fmt.Fprintf(b, `<rect class="bar" x="%.2f" y="%.2f" width="%.2f" height="%.2f"><title>%s to %s: %d</title></rect>`+"\n",
			x0, y0, math.Max(x1-x0-0.3, 0.5), top+plotH-y0, html.EscapeString(fmtMS(bk.LoMS)), html.EscapeString(fmtMS(bk.HiMS)), bk.Count)
	}
	for i, m := range marks {
		if m.ms <= 0 {
			continue
		}
		px := x(m.ms)
		fmt.Fprintf(b, `<line class="pct" x1="%.1f" y1="%d" x2="%.1f" y2="%d"/>`+"\n", px, top, px, top+plotH)
		fmt.Fprintf(b, `<text class="pcttext" x="%.1f" y="%d">%s %s</text>`+"\n", px+3, top+12+12*i, html.EscapeString(m.label), html.EscapeString(fmtMS(m.ms)))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">latency (log scale)</text>`+"\n", left+plotW/2, height-6)
	fmt.Fprintf(b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">requests per 1/%d of a doubling</text>`+"\n", top+plotH/2, top+plotH/2, histSub)
	b.WriteString("</svg>\n")
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten, for grid lines
// at values people read at a glance.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
