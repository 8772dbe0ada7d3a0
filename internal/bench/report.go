package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// Report is the outcome of a run. It is written for people by WriteText,
// for machines by WriteJSON (the same fields), and as a latency histogram
// page by WriteHTML.
type Report struct {
	StartedAt time.Time `json:"startedAt"`
	// Mode is "self-contained" or "external".
	Mode string `json:"mode"`
	// Load is "burst" (--requests), "rate" (--rate) or "preload".
	Load     string   `json:"load"`
	Settings Settings `json:"settings"`

	Requests       int     `json:"requests"`
	Published      int     `json:"published"`
	PublishErrors  int     `json:"publishErrors"`
	PublishSeconds float64 `json:"publishSeconds"`
	PublishRate    float64 `json:"publishRate"`

	Outcomes   Outcomes   `json:"outcomes"`
	Throughput Throughput `json:"throughput"`
	Latency    Latency    `json:"latency"`

	// Processes are the children, then the bench itself (with the
	// embedded NATS server); only for a self-contained run.
	Processes []ProcessReport `json:"processes,omitempty"`
	// Instances is the split of the work among the cardbridge instances.
	Instances []InstanceReport `json:"instances,omitempty"`
	// CPU splits the machine's CPU time over the measured window.
	CPU *CPUReport `json:"cpu,omitempty"`
	// Logs summarises cardbridge's warnings and errors.
	Logs     *LogSummary     `json:"logs,omitempty"`
	Baseline *BaselineReport `json:"baseline,omitempty"`
	// Bank is what the sandbox saw; only for a self-contained run.
	Bank *BankReport `json:"bank,omitempty"`

	// Passed is false when a request did not get exactly one outcome, a
	// publish failed, or (without --allow-failed) a request failed;
	// Problems says which.
	Passed   bool     `json:"passed"`
	Problems []string `json:"problems,omitempty"`

	// Histogram lists the non-empty latency buckets.
	Histogram []HistogramBucket `json:"histogram"`
	// Timeline has the latency of the requests published in each second
	// of the run, to tell a steady tail from a few bad moments.
	Timeline []Second `json:"timeline"`

	hist Histogram
}

// BankReport is what the sandbox counted over the run: every call
// cardbridge made (token requests, users and cards), those refused by its
// tenant rate limit, and the cards made.
type BankReport struct {
	// RateLimit is --bank-rate-limit, calls per second (0: none).
	RateLimit float64 `json:"rateLimit,omitempty"`
	Calls     int64   `json:"calls"`
	// RateLimited counts the calls refused with 429 by the tenant limit,
	// RateLimitedShare their share of Calls.
	RateLimited      int64   `json:"rateLimited"`
	RateLimitedShare float64 `json:"rateLimitedShare"`
	// Accepted is the calls not refused by the limit; AcceptedPerSecond
	// over the throughput window, and LimitShare that rate over the limit
	// (the goodput at the bank).
	Accepted          int64   `json:"accepted"`
	AcceptedPerSecond float64 `json:"acceptedPerSecond"`
	LimitShare        float64 `json:"limitShare,omitempty"`
	CardsCreated      int64   `json:"cardsCreated"`
	TooEarly          int64   `json:"tooEarly"`
}

func bankReport(st sandbox.Stats, limit, windowSeconds float64) *BankReport {
	b := &BankReport{RateLimit: limit, Calls: st.Requests, RateLimited: st.TenantRateLimited,
		Accepted: st.Requests - st.TenantRateLimited, CardsCreated: st.CardsCreated, TooEarly: st.TooEarly}
	if b.Calls > 0 {
		b.RateLimitedShare = float64(b.RateLimited) / float64(b.Calls)
	}
	if windowSeconds > 0 {
		b.AcceptedPerSecond = float64(b.Accepted) / windowSeconds
	}
	if limit > 0 {
		b.LimitShare = b.AcceptedPerSecond / limit
	}
	return b
}

// Settings echoes the configuration that shapes the figures.
type Settings struct {
	InFlight        int     `json:"inFlight"`
	Instances       int     `json:"instances"`
	BankLatencyMS   float64 `json:"bankLatencyMs"`
	BankJitterMS    float64 `json:"bankLatencyJitterMs"`
	Rate            float64 `json:"rate,omitempty"`
	DurationSeconds float64 `json:"durationSeconds,omitempty"`
	Publishers      int     `json:"publishers"`
	PublishWindow   int     `json:"publishWindow"`
	WarmupSeconds   float64 `json:"warmupSeconds,omitempty"`
	Source          string  `json:"source"`
	ClientID        int64   `json:"clientId"`
	CPUs            int     `json:"cpus"`
}

// Outcomes counts what came back. Completed requests got at least one
// outcome; Duplicates counts the outcomes beyond the first.
type Outcomes struct {
	Completed     int            `json:"completed"`
	Issued        int            `json:"issued"`
	Failed        int            `json:"failed"`
	FailedReasons map[string]int `json:"failedReasons,omitempty"`
	Duplicates    int            `json:"duplicates"`
	Missing       int            `json:"missing"`
	// Unrelated counts outcomes on the stream that answer requests of
	// someone else (a shared deployment).
	Unrelated int `json:"unrelated"`
}

// Throughput is completed requests per second over the window from its
// start (the first publish; for a preloaded run, the launch of the first
// cardbridge) to the last first-outcome. Steady leaves out the first and
// last 10% of completions, i.e. warm-up (connections, the first
// self-service user, JIT-free but cache-cold Postgres) and the tail.
type Throughput struct {
	WindowStart     string  `json:"windowStart"`
	WindowSeconds   float64 `json:"windowSeconds"`
	PerSecond       float64 `json:"perSecond"`
	SteadyPerSecond float64 `json:"steadyPerSecond"`
}

// Latency summarises publish-to-outcome latencies, exactly (from the
// sorted samples), in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	MinMS   float64 `json:"minMs"`
	MeanMS  float64 `json:"meanMs"`
	P50MS   float64 `json:"p50Ms"`
	P90MS   float64 `json:"p90Ms"`
	P99MS   float64 `json:"p99Ms"`
	P999MS  float64 `json:"p999Ms"`
	MaxMS   float64 `json:"maxMs"`
}

// ProcessReport describes one process of the stack. PeakRSSBytes is the
// kernel's VmHWM (or the largest sample, should that be higher);
// MaxSampledRSSBytes the largest VmRSS seen by sampling twice a second.
// CPUSeconds covers the measured window.
type ProcessReport struct {
	Role               string  `json:"role"`
	PID                int     `json:"pid"`
	PeakRSSBytes       int64   `json:"peakRssBytes"`
	MaxSampledRSSBytes int64   `json:"maxSampledRssBytes"`
	CPUSeconds         float64 `json:"cpuSeconds"`
}

// CPUReport splits the machine's busy CPU time during the measured window,
// in cores (CPU seconds per second). Postgres counts every process of the
// server (other users' too); Other is the rest of the machine, which on a
// shared box is worth a look before trusting a figure.
type CPUReport struct {
	Cores                 int     `json:"cores"`
	Busy                  float64 `json:"busy"`
	Cardbridge            float64 `json:"cardbridge"`
	Sandbox               float64 `json:"sandbox"`
	BenchAndNATS          float64 `json:"benchAndNats"`
	Postgres              float64 `json:"postgres"`
	Other                 float64 `json:"other"`
	CardbridgeMicrosPerRq float64 `json:"cardbridgeCpuMicrosPerRequest"`
	// PostgresMicrosPerRq and MachineMicrosPerRq are the CPU time of
	// Postgres, and of the whole machine, per completed request.
	PostgresMicrosPerRq float64 `json:"postgresCpuMicrosPerRequest"`
	MachineMicrosPerRq  float64 `json:"machineCpuMicrosPerRequest"`
}

// LogSummary counts cardbridge's warnings and errors and lists the
// commonest.
type LogSummary struct {
	Warnings int       `json:"warnings"`
	Errors   int       `json:"errors"`
	Top      []LogLine `json:"top,omitempty"`
}

// LogLine is one distinct log message and how often it appeared.
type LogLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	Count int    `json:"count"`
}

// Second summarises the latencies of the requests published in one second
// of the run (Second 0 starts at the first publish).
type Second struct {
	Second   int     `json:"second"`
	Requests int     `json:"requests"`
	P50MS    float64 `json:"p50Ms"`
	P99MS    float64 `json:"p99Ms"`
	MaxMS    float64 `json:"maxMs"`
}

// HistogramBucket is Count latencies in [LoMS, HiMS).
type HistogramBucket struct {
	LoMS  float64 `json:"loMs"`
	HiMS  float64 `json:"hiMs"`
	Count uint64  `json:"count"`
}

// noisyNeighbourCores is how much CPU other programs may take before the
// report warns that the run shared the machine.
const noisyNeighbourCores = 0.25

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarise fills the report's outcome, throughput and latency figures
// from the load; windowStartNS is where the throughput window starts.
// Requests published in the first warmup are left out of the latencies.
func (r *Report) summarise(l *load, windowStartNS int64, warmup time.Duration, allowFailed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r.Published = int(l.published.Load())
	r.PublishErrors = int(l.publishErrors.Load())
	o := Outcomes{FailedReasons: map[string]int{}, Unrelated: l.unrelated}
	var lat []time.Duration
	var recv []int64
	var bySecond [][]time.Duration
	for i, n := range l.outcomes {
		sent := l.sentNS[i].Load()
		if n == 0 {
			if sent != 0 {
				o.Missing++
			}
			continue
		}
		o.Completed++
		o.Duplicates += int(n) - 1
		if l.failed[i] {
			o.Failed++
		} else {
			o.Issued++
		}
		recv = append(recv, l.recvNS[i])
		if sent != 0 {
			d := time.Duration(l.recvNS[i] - (sent - 1))
			sec := int(time.Duration(sent - 1).Seconds())
			for len(bySecond) <= sec {
				bySecond = append(bySecond, nil)
			}
			bySecond[sec] = append(bySecond[sec], d)
			if sent-1 >= int64(warmup) {
				lat = append(lat, d)
				r.hist.Record(d)
			}
		}
	}
	for k, v := range l.reasons {
		o.FailedReasons[k] = v
	}
	if len(o.FailedReasons) == 0 {
		o.FailedReasons = nil
	}
	r.Outcomes = o

	if len(recv) > 0 {
		slices.Sort(recv)
		end := recv[len(recv)-1]
		r.Throughput.WindowSeconds = time.Duration(end - windowStartNS).Seconds()
		if r.Throughput.WindowSeconds > 0 {
			r.Throughput.PerSecond = float64(len(recv)) / r.Throughput.WindowSeconds
		}
		r.Throughput.SteadyPerSecond = steadyRate(recv)
	}
	r.Latency = latencySummary(lat)
	for sec, ds := range bySecond {
		if len(ds) == 0 {
			continue
		}
		sum := latencySummary(ds)
		r.Timeline = append(r.Timeline, Second{Second: sec, Requests: len(ds), P50MS: sum.P50MS, P99MS: sum.P99MS, MaxMS: sum.MaxMS})
	}
	for _, b := range r.hist.Buckets() {
		r.Histogram = append(r.Histogram, HistogramBucket{LoMS: ms(b.Lo), HiMS: ms(b.Hi), Count: b.Count})
	}

	var problems []string
	if r.PublishErrors > 0 {
		problems = append(problems, fmt.Sprintf("%d publish errors", r.PublishErrors))
	}
	if o.Missing > 0 {
		problems = append(problems, fmt.Sprintf("%d requests without an outcome", o.Missing))
	}
	if o.Duplicates > 0 {
		problems = append(problems, fmt.Sprintf("%d duplicate outcomes", o.Duplicates))
	}
	if o.Failed > 0 && !allowFailed {
		problems = append(problems, fmt.Sprintf("%d requests failed (card.failed)", o.Failed))
	}
	if r.Published < r.Requests {
		problems = append(problems, fmt.Sprintf("only %d of %d requests published", r.Published, r.Requests))
	}
	r.Problems = problems
	r.Passed = len(problems) == 0
}

// steadyRate is the completion rate between the 10th and the 90th
// percentile of completion times (sorted), or 0 when there are too few.
func steadyRate(sorted []int64) float64 {
	n := len(sorted)
	if n < 20 {
		return 0
	}
	lo, hi := n/10, n-1-n/10
	span := time.Duration(sorted[hi] - sorted[lo]).Seconds()
	if span <= 0 {
		return 0
	}
	return float64(hi-lo) / span
}

// latencySummary computes exact percentiles (nearest rank) of lat, which
// it sorts.
func latencySummary(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	slices.Sort(lat)
	n := uint64(len(lat))
	at := func(q float64) float64 { return ms(lat[quantileRank(q, n)-1]) }
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	return Latency{
		Samples: len(lat),
		MinMS:   ms(lat[0]),
		MeanMS:  ms(sum / time.Duration(len(lat))),
		P50MS:   at(0.5),
		P90MS:   at(0.9),
		P99MS:   at(0.99),
		P999MS:  at(0.999),
		MaxMS:   ms(lat[len(lat)-1]),
	}
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	s := r.Settings
	load := fmt.Sprintf("%d requests", r.Requests)
	switch r.Load {
	case "rate":
		load = fmt.Sprintf("%s/s for %s (%d requests)", num(s.Rate), time.Duration(s.DurationSeconds*float64(time.Second)), r.Requests)
	case "preload":
		load = fmt.Sprintf("%d requests preloaded before cardbridge started", r.Requests)
	}
	fmt.Fprintf(&b, "cardbridge bench: %s, %s\n", r.Mode, load)
	fmt.Fprintf(&b, "  setup       %d instance(s), in-flight %d, bank latency %s", s.Instances, s.InFlight, fmtMS(s.BankLatencyMS))
	if s.BankJitterMS > 0 {
		fmt.Fprintf(&b, " (+ up to %s)", fmtMS(s.BankJitterMS))
	}
	fmt.Fprintf(&b, ", %d publishers, window %d, %d CPUs\n", s.Publishers, s.PublishWindow, s.CPUs)
	fmt.Fprintf(&b, "  published   %d in %.2fs (%s/s), %d publish errors\n", r.Published, r.PublishSeconds, num(r.PublishRate), r.PublishErrors)
	o := r.Outcomes
	fmt.Fprintf(&b, "  outcomes    %d issued, %d failed, %d duplicates, %d missing", o.Issued, o.Failed, o.Duplicates, o.Missing)
	if o.Unrelated > 0 {
		fmt.Fprintf(&b, " (%d unrelated ignored)", o.Unrelated)
	}
	b.WriteString("\n")
	if len(o.FailedReasons) > 0 {
		fmt.Fprintf(&b, "  failed      %s\n", countsLine(o.FailedReasons))
	}
	t := r.Throughput
	fmt.Fprintf(&b, "  throughput  %s req/s over %.2fs (%s to last outcome); steady %s req/s (10%%-90%% of completions)\n",
		num(t.PerSecond), t.WindowSeconds, t.WindowStart, num(t.SteadyPerSecond))
	l := r.Latency
	// Only an open-loop rate below capacity measures the service's own
	// latency; a burst or a preload mostly measures the queue.
	what := "publish to outcome"
	if r.Load != "rate" {
		what += ", including the wait in the stream"
	}
	if w := r.Settings.WarmupSeconds; w > 0 {
		what += fmt.Sprintf("; after a %gs warm-up", w)
	}
	fmt.Fprintf(&b, "  latency     p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, min %s; %s)\n",
		fmtMS(l.P50MS), fmtMS(l.P90MS), fmtMS(l.P99MS), fmtMS(l.P999MS), fmtMS(l.MaxMS), fmtMS(l.MeanMS), fmtMS(l.MinMS), what)
	if bk := r.Bank; bk != nil {
		fmt.Fprintf(&b, "  bank        %d calls, %d refused by the rate limit (%.1f%%), %s accepted calls/s", bk.Calls, bk.RateLimited, 100*bk.RateLimitedShare, num(bk.AcceptedPerSecond))
		if bk.RateLimit > 0 {
			fmt.Fprintf(&b, " (%.1f%% of the %s/s limit)", 100*bk.LimitShare, num(bk.RateLimit))
		}
		fmt.Fprintf(&b, ", %d cards made, %d answered 425\n", bk.CardsCreated, bk.TooEarly)
	}
	if len(r.Instances) > 0 {
		fmt.Fprintf(&b, "  split       %s (as each counts, warm-up included)\n", splitLine(r.Instances))
	}
	var peakSum int64
	nInst := 0
	for _, p := range r.Processes {
		if p.Role != "cardbridge" {
			continue
		}
		nInst++
		peakSum += p.PeakRSSBytes
		fmt.Fprintf(&b, "  memory      cardbridge pid %d: peak %s (VmHWM), max sampled RSS %s, CPU %.1fs\n",
			p.PID, mib(p.PeakRSSBytes), mib(p.MaxSampledRSSBytes), p.CPUSeconds)
	}
	if nInst > 1 {
		fmt.Fprintf(&b, "  memory      all cardbridge: peak %s together\n", mib(peakSum))
	}
	if c := r.CPU; c != nil {
		fmt.Fprintf(&b, "  cpu         %.2f of %d cores busy (%s µs/request): cardbridge %.2f (%s µs/request), Postgres %.2f (%s µs/request), bench+NATS %.2f, sandbox %.2f, other %.2f\n",
			c.Busy, c.Cores, num(c.MachineMicrosPerRq), c.Cardbridge, num(c.CardbridgeMicrosPerRq),
			c.Postgres, num(c.PostgresMicrosPerRq), c.BenchAndNATS, c.Sandbox, c.Other)
		if c.Other >= noisyNeighbourCores {
			fmt.Fprintf(&b, "  note        other programs used %.2f cores during the run: the figures understate what this machine can do\n", c.Other)
		}
	}
	if lg := r.Logs; lg != nil {
		fmt.Fprintf(&b, "  logs        cardbridge logged %d errors, %d warnings\n", lg.Errors, lg.Warnings)
		for _, t := range lg.Top {
			fmt.Fprintf(&b, "                %6d × %s %q\n", t.Count, t.Level, t.Msg)
		}
	}
	if bl := r.Baseline; bl != nil {
		fmt.Fprintf(&b, "  baseline    one commit per request (inbox + outbox row), %d requests on %d connections: %s commits/s\n",
			bl.Requests, bl.Conns, num(bl.PerSecond))
		if c := bl.CPU; c != nil {
			pg := "not measured"
			if c.PostgresMicrosPerRq > 0 {
				pg = num(c.PostgresMicrosPerRq) + " µs"
			}
			fmt.Fprintf(&b, "              CPU per commit: Postgres %s, whole machine %s µs (the bench's client included)\n",
				pg, num(c.MachineMicrosPerRq))
		}
		fmt.Fprintf(&b, "  ratio       cardbridge / baseline = %.2f (steady: %.2f)\n", bl.Ratio, bl.SteadyRatio)
		if bl.PostgresRatio > 0 {
			fmt.Fprintf(&b, "              Postgres CPU, a bare commit / a cardbridge request = %.1f\n", bl.PostgresRatio)
		}
	}
	if r.Passed {
		b.WriteString("  result      PASS: every request got exactly one outcome\n")
	} else {
		fmt.Fprintf(&b, "  result      FAIL: %s\n", strings.Join(r.Problems, "; "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// num formats a rate or count with thousands separators and, below 100,
// one decimal.
func num(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// fmtMS formats milliseconds at a precision that suits their size.
func fmtMS(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 10000:
		return fmt.Sprintf("%.1fs", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.2fms", v)
}

func mib(b int64) string {
	if b <= 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func countsLine(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
