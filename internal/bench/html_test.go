package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWriteHTMLIsSelfContained(t *testing.T) {
	t.Parallel()
	r := &Report{StartedAt: time.Now(), Mode: "self-contained", Load: "rate", Requests: 3, Passed: true,
		Problems: []string{`<script>alert("x")</script>`}}
	for _, d := range []time.Duration{0, 3 * time.Millisecond, 40 * time.Millisecond, 2 * time.Second} {
		r.hist.Record(d)
	}
	for _, b := range r.hist.Buckets() {
		r.Histogram = append(r.Histogram, HistogramBucket{LoMS: ms(b.Lo), HiMS: ms(b.Hi), Count: b.Count})
	}
	r.Latency = Latency{Samples: 4, P50MS: 3, P90MS: 2000, P99MS: 2000, P999MS: 2000, MaxMS: 2000}
	r.Passed = false
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if n := strings.Count(page, "<rect"); n != len(r.Histogram) {
		t.Errorf("%d bars drawn, want one per bucket (%d)", n, len(r.Histogram))
	}
	for _, bad := range []string{"<script", "src=", "href=", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q: it must fetch nothing and run nothing", bad)
		}
	}
	if strings.Count(page, "http://") != strings.Count(page, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Error("the page names a URL other than the SVG namespace")
	}
}

func TestWriteHTMLWithoutSamples(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := (&Report{}).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "No latencies") {
		t.Error("an empty run must say there is nothing to draw")
	}
}
