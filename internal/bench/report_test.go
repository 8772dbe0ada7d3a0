package bench

import (
	"bufio"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeLoad is a load of n requests, each published at 1ms and answered
// by the outcomes given (0: none), completing at (i+2) ms.
func fakeLoad(outcomes []uint16, failed map[int]string) *load {
	n := len(outcomes)
	l := &load{
		sentNS:   make([]atomic.Int64, n),
		recvNS:   make([]int64, n),
		outcomes: outcomes,
		failed:   make([]bool, n),
		reasons:  map[string]int{},
	}
	for i := range n {
		l.sentNS[i].Store(int64(time.Millisecond) + 1)
		l.published.Add(1)
		if outcomes[i] > 0 {
			l.recvNS[i] = int64(time.Duration(i+2) * time.Millisecond)
		}
		if reason, ok := failed[i]; ok {
			l.failed[i] = true
			l.reasons[reason]++
		}
	}
	return l
}

func TestSummariseCountsEveryKindOfDeviation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		outcomes    []uint16
		failed      map[int]string
		allowFailed bool
		want        Outcomes
		pass        bool
		problem     string
	}{
		{"all exactly once", []uint16{1, 1, 1, 1}, nil, false,
			Outcomes{Completed: 4, Issued: 4}, true, ""},
		{"one missing", []uint16{1, 0, 1, 1}, nil, false,
			Outcomes{Completed: 3, Issued: 3, Missing: 1}, false, "1 requests without an outcome"},
		{"duplicates", []uint16{1, 3, 1, 2}, nil, false,
			Outcomes{Completed: 4, Issued: 4, Duplicates: 3}, false, "3 duplicate outcomes"},
		{"failed fails the run", []uint16{1, 1, 1, 1}, map[int]string{2: "bank_rejected"}, false,
			Outcomes{Completed: 4, Issued: 3, Failed: 1, FailedReasons: map[string]int{"bank_rejected": 1}}, false, "1 requests failed"},
		{"failed allowed", []uint16{1, 1, 1, 1}, map[int]string{2: "bank_rejected"}, true,
			Outcomes{Completed: 4, Issued: 3, Failed: 1, FailedReasons: map[string]int{"bank_rejected": 1}}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{Requests: len(tc.outcomes)}
			r.summarise(fakeLoad(tc.outcomes, tc.failed), 0, 0, tc.allowFailed)
			got := r.Outcomes
			if got.Completed != tc.want.Completed || got.Issued != tc.want.Issued || got.Failed != tc.want.Failed ||
				got.Duplicates != tc.want.Duplicates || got.Missing != tc.want.Missing ||
				len(got.FailedReasons) != len(tc.want.FailedReasons) {
				t.Fatalf("outcomes = %+v, want %+v", got, tc.want)
			}
			for k, v := range tc.want.FailedReasons {
				if got.FailedReasons[k] != v {
					t.Errorf("failed reason %s = %d, want %d", k, got.FailedReasons[k], v)
				}
			}
			if r.Passed != tc.pass {
				t.Errorf("Passed = %v, want %v (problems %v)", r.Passed, tc.pass, r.Problems)
			}
			if tc.problem != "" && !strings.Contains(strings.Join(r.Problems, "; "), tc.problem) {
				t.Errorf("problems %v do not mention %q", r.Problems, tc.problem)
			}
			if r.Latency.Samples != got.Completed {
				t.Errorf("latency samples = %d, want one per completed request (%d)", r.Latency.Samples, got.Completed)
			}
		})
	}
}

func TestLatencySummaryIsExact(t *testing.T) {
	t.Parallel()
	var lat []time.Duration
	for i := 1000; i >= 1; i-- { // unsorted on purpose
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	got := latencySummary(lat)
	want := Latency{Samples: 1000, MinMS: 1, MeanMS: 500.5, P50MS: 500, P90MS: 900, P99MS: 990, P999MS: 999, MaxMS: 1000}
	if got != want {
		t.Fatalf("latencySummary = %+v, want %+v", got, want)
	}
}

func TestSteadyRateLeavesOutTheEdges(t *testing.T) {
	t.Parallel()
	// 100 completions one per ms, but the first and last ten spread over a
	// second each (warm-up, tail): the steady rate is the middle's 1000/s.
	var ts []int64
	for i := range 10 {
		ts = append(ts, int64(i)*int64(100*time.Millisecond))
	}
	start := ts[len(ts)-1] + int64(time.Millisecond)
	for i := range 80 {
		ts = append(ts, start+int64(i)*int64(time.Millisecond))
	}
	end := ts[len(ts)-1]
	for i := range 10 {
		ts = append(ts, end+int64(i+1)*int64(100*time.Millisecond))
	}
	got := steadyRate(ts)
	if got < 900 || got > 1100 {
		t.Fatalf("steadyRate = %.0f/s, want about 1000/s", got)
	}
	if steadyRate(ts[:5]) != 0 {
		t.Fatal("too few completions must give no steady rate")
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	t.Parallel()
	c := Defaults()
	c.Requests = 0
	c.InFlight = 0
	c.Schema = "x; DROP"
	err := c.Validate()
	if err == nil {
		t.Fatal("an invalid configuration passed")
	}
	for _, want := range []string{"--requests", "--in-flight", "--schema"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"rate without duration", func(c *Config) { c.Rate = 10 }},
		{"preload with rate", func(c *Config) { c.Rate, c.Duration, c.Preload = 10, time.Second, true }},
		{"preload against a deployment", func(c *Config) { c.Preload, c.NATSURL = true, "nats://x:4222" }},
		{"instances against a deployment", func(c *Config) { c.Instances, c.NATSURL = 2, "nats://x:4222" }},
		{"the public schema", func(c *Config) { c.Schema = "public" }},
		{"a system schema", func(c *Config) { c.Schema = "pg_catalog" }},
	} {
		c := Defaults()
		tc.edit(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if err := Defaults().Validate(); err != nil {
		t.Errorf("the defaults are invalid: %v", err)
	}
}

// The timeline groups latencies by the second their request was
// published in, so one bad second stands out from a steady tail.
func TestTimelineGroupsBySecondOfPublish(t *testing.T) {
	t.Parallel()
	l := fakeLoad([]uint16{1, 1, 1, 1}, nil)
	// Requests 2 and 3 are published 2.5 s in and take 100 and 300 ms.
	l.sentNS[2].Store(int64(2500*time.Millisecond) + 1)
	l.recvNS[2] = int64(2600 * time.Millisecond)
	l.sentNS[3].Store(int64(2500*time.Millisecond) + 1)
	l.recvNS[3] = int64(2800 * time.Millisecond)
	var r Report
	r.Requests = 4
	r.summarise(l, 0, 0, false)
	want := []Second{
		{Second: 0, Requests: 2, P50MS: 1, P99MS: 2, MaxMS: 2},
		{Second: 2, Requests: 2, P50MS: 100, P99MS: 300, MaxMS: 300},
	}
	if len(r.Timeline) != len(want) {
		t.Fatalf("timeline = %+v, want %+v", r.Timeline, want)
	}
	for i := range want {
		if r.Timeline[i] != want[i] {
			t.Errorf("second %d = %+v, want %+v", i, r.Timeline[i], want[i])
		}
	}
}

// Warm-up requests are checked for their outcome but left out of the
// latency figures; the timeline still shows them.
func TestWarmupIsLeftOutOfLatency(t *testing.T) {
	t.Parallel()
	l := fakeLoad([]uint16{1, 1, 1}, nil)
	// Request 0 is published at 1 ms and takes 1 ms; 1 and 2 are
	// published 3 s in and take 10 and 20 ms.
	for i, took := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond} {
		l.sentNS[i].Store(int64(3*time.Second) + 1)
		l.recvNS[i] = int64(3*time.Second + took)
	}
	var r Report
	r.Requests = 3
	r.summarise(l, 0, 2*time.Second, false)
	if !r.Passed || r.Outcomes.Completed != 3 {
		t.Fatalf("outcomes = %+v, problems %v: warm-up requests must still be checked", r.Outcomes, r.Problems)
	}
	if r.Latency.Samples != 2 || r.Latency.MinMS != 10 || r.Latency.MaxMS != 20 {
		t.Errorf("latency = %+v, want the two requests after the warm-up", r.Latency)
	}
	if len(r.Timeline) != 2 {
		t.Errorf("timeline = %+v, want the warm-up second and second 3", r.Timeline)
	}
}

func TestParseOutcomeCounts(t *testing.T) {
	t.Parallel()
	page := `# HELP cardbridge_requests_total Deliveries of request messages handled.
# TYPE cardbridge_requests_total counter
cardbridge_requests_total{outcome="issued",type="employee.card.requested"} 1234
cardbridge_requests_total{outcome="issued",type="other"} 1
cardbridge_requests_total{outcome="failed",type="employee.card.requested"} 7
cardbridge_requests_total{outcome="retry",type="employee.card.requested"} 2
cardbridge_requests_in_flight 3
`
	counts, err := parseOutcomeCounts(bufio.NewScanner(strings.NewReader(page)))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"issued": 1235, "failed": 7, "retry": 2}
	if !maps.Equal(counts, want) {
		t.Fatalf("got %v, want %v", counts, want)
	}
	line := splitLine([]InstanceReport{{Name: "cardbridge-1", PID: 10, Issued: 600, Share: 0.6}, {Name: "cardbridge-2", PID: 11, Issued: 400, Share: 0.4}})
	if line != "cardbridge-1 (pid 10) 600 issued (60.0%), cardbridge-2 (pid 11) 400 issued (40.0%)" {
		t.Fatalf("split line %q", line)
	}
}
