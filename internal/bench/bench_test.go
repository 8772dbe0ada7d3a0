package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/bench"
	"github.com/cardbridge/cardbridge/internal/cli"
	"github.com/cardbridge/cardbridge/internal/testenv"
)

// buildCardbridge builds the cardbridge binary: the bench starts the
// sandbox and cardbridge as processes of that executable, and a test
// binary cannot stand in for it.
func buildCardbridge(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cardbridge")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/cardbridge/cardbridge/cmd/cardbridge")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building cardbridge: %v\n%s", err, out)
	}
	return bin
}

// benchDatabase returns a Postgres URL without search_path and a fresh
// schema name of the test's own (testenv drops it when the test ends).
func benchDatabase(t *testing.T) (base, schema string) {
	t.Helper()
	u, err := url.Parse(testenv.DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	schema = q.Get("search_path")
	q.Del("search_path")
	u.RawQuery = q.Encode()
	return u.String(), schema
}

// TestSmoke runs the whole bench through the command line against a stack
// of its own (embedded NATS, the sandbox and cardbridge as processes, real
// Postgres) and checks only correctness: every request got exactly one
// outcome. Times are never asserted; they depend on the machine.
func TestSmoke(t *testing.T) {
	t.Parallel()
	bin := buildCardbridge(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"two instances, baseline, html", []string{"--requests", "200", "--instances", "2", "--baseline", "--baseline-requests", "200"}},
		{"preload, cpu profile", []string{"--requests", "200", "--preload"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, schema := benchDatabase(t)
			htmlPath := filepath.Join(t.TempDir(), "latency.html")
			profilePath := filepath.Join(t.TempDir(), "bench.pprof")
			if strings.Contains(tc.name, "cpu profile") {
				tc.args = append(tc.args, "--cpuprofile", profilePath)
			}
			args := append([]string{"bench",
				"--cardbridge-bin", bin, "--database-url", base, "--schema", schema, "--keep-schema",
				"--in-flight", "64", "--settle", "200ms", "--idle-timeout", "20s",
				"--json", "--html", htmlPath}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := cli.Main(ctx, args, cli.Env{Getenv: os.Getenv, Stdout: &stdout, Stderr: &stderr})
			if code != 0 {
				t.Fatalf("bench exited %d\nstderr:\n%s", code, stderr.String())
			}
			var r bench.Report
			if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
				t.Fatalf("the JSON report does not parse: %v\n%s", err, stdout.String())
			}
			o := r.Outcomes
			if !r.Passed || r.Published != 200 || o.Issued != 200 || o.Completed != 200 ||
				o.Failed != 0 || o.Duplicates != 0 || o.Missing != 0 || r.PublishErrors != 0 {
				t.Fatalf("want 200 requests with exactly one card.issued each, got %+v (published %d, problems %v)",
					o, r.Published, r.Problems)
			}
			if slices.Contains(tc.args, "--baseline") {
				// The Postgres share (zero where Postgres is elsewhere) is
				// checked in baseline_test.go.
				bl := r.Baseline
				if bl == nil || bl.PerSecond <= 0 || bl.CPU == nil || bl.CPU.MachineMicrosPerRq <= 0 {
					t.Errorf("the baseline report lacks its rate or its CPU per commit: %+v", bl)
				}
				if r.CPU == nil || r.CPU.MachineMicrosPerRq <= 0 {
					t.Errorf("the run's report lacks the CPU per request: %+v", r.CPU)
				}
			}
			// The split among the instances, as each counts its work.
			instances := 1
			if slices.Contains(tc.args, "--instances") {
				instances = 2
			}
			var issued int64
			for _, in := range r.Instances {
				if in.Error != "" || in.PID == 0 {
					t.Errorf("instance %+v", in)
				}
				issued += in.Issued
			}
			if len(r.Instances) != instances || issued != 200 {
				t.Errorf("want %d instances issuing 200 together, got %+v", instances, r.Instances)
			}
			if !strings.Contains(stderr.String(), "  split       cardbridge-1 (pid ") {
				t.Errorf("the text report has no split line:\n%s", stderr.String())
			}
			if r.Latency.Samples != 200 {
				t.Errorf("latency samples = %d, want 200", r.Latency.Samples)
			}
			page, err := os.ReadFile(htmlPath)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(page, []byte("<svg")) || bytes.Contains(page, []byte("http://")) && !onlySVGNamespace(page) {
				t.Errorf("the HTML page must hold an inline SVG and reference nothing on the network")
			}
			if strings.Contains(tc.name, "cpu profile") {
				prof, err := os.ReadFile(profilePath)
				if err != nil || !bytes.HasPrefix(prof, []byte{0x1f, 0x8b}) {
					t.Errorf("--cpuprofile wrote no gzipped profile (%d bytes, %v)", len(prof), err)
				}
			}
			if !strings.Contains(stderr.String(), "PASS") {
				t.Errorf("the text report (stderr with --json) does not say PASS:\n%s", stderr.String())
			}
		})
	}
}

// onlySVGNamespace reports whether every "http://" in page is the SVG
// namespace, which is an identifier, not something fetched.
func onlySVGNamespace(page []byte) bool {
	return bytes.Count(page, []byte("http://")) == bytes.Count(page, []byte(`xmlns="http://www.w3.org/2000/svg"`))
}
