package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// Run performs the benchmark cfg describes and returns its report; the
// report says whether every request got exactly one outcome, which Run's
// error does not: an error means the run itself could not be carried out.
// status receives the bench's progress and notices (stderr, usually).
//
// A self-contained run stops its children and drops its schema before
// returning, also when ctx is cancelled (Ctrl-C).
func Run(ctx context.Context, cfg Config, status io.Writer) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if status == nil {
		status = io.Discard
	}
	if cfg.SelfContained() && cfg.CardbridgeBin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the cardbridge executable (use --cardbridge-bin): %w", err)
		}
		cfg.CardbridgeBin = exe
	}

	r := &Report{
		StartedAt: time.Now(),
		Mode:      "external",
		Load:      "burst",
		Requests:  cfg.total(),
		Settings: Settings{
			InFlight: cfg.InFlight, Instances: cfg.Instances,
			BankLatencyMS: ms(cfg.BankLatency), BankJitterMS: ms(cfg.BankLatencyJitter),
			Rate: cfg.Rate, DurationSeconds: cfg.Duration.Seconds(),
			Publishers: cfg.Publishers, PublishWindow: cfg.PublishWindow,
			WarmupSeconds: cfg.Warmup.Seconds(),
			Source:        cfg.Source, ClientID: cfg.ClientID, CPUs: runtime.NumCPU(),
		},
	}
	switch {
	case cfg.Preload:
		r.Load = "preload"
	case cfg.Rate > 0:
		r.Load = "rate"
	}

	var st *stack
	natsURL := cfg.NATSURL
	if cfg.SelfContained() {
		r.Mode = "self-contained"
		var err error
		if st, err = startStack(ctx, cfg, status); err != nil {
			return nil, err
		}
		defer st.close()
		natsURL = st.natsURL()
	}

	l := newLoad(cfg, r.Requests)
	nc, err := nats.Connect(natsURL, nats.Name("cardbridge bench"), nats.Timeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %s", secret.RedactURL(natsURL), secret.RedactURLIn(err.Error(), natsURL))
	}
	defer nc.Close()
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(cfg.PublishWindow),
		jetstream.WithPublishAsyncTimeout(time.Minute),
		jetstream.WithPublishAsyncErrHandler(l.publishErrorHandler))
	if err != nil {
		return nil, err
	}
	if st != nil {
		if err := ensureStreams(ctx, js); err != nil {
			return nil, err
		}
		if !cfg.Preload {
			if _, err := st.startInstances(ctx); err != nil {
				return nil, err
			}
		}
	}

	cc, err := l.subscribe(ctx, js)
	if err != nil {
		return nil, err
	}
	defer cc.Stop()

	// Samplers: memory twice a second for the whole run, the progress line
	// once a second when asked for. t0 is set first: the progress line
	// reads it.
	l.t0 = time.Now()
	samplerCtx, stopSamplers := context.WithCancel(ctx)
	defer stopSamplers()
	if st != nil {
		go sampleEvery(samplerCtx, 500*time.Millisecond, st.sampleMemory)
	}
	if cfg.Progress {
		p := &progress{l: l, st: st, w: status}
		go sampleEvery(samplerCtx, time.Second, p.print)
	}

	cpu0 := takeCPU(st)
	if err := l.publish(ctx, js); err != nil {
		return nil, fmt.Errorf("publishing: %w", err)
	}
	r.PublishSeconds = time.Since(l.t0).Seconds()
	if r.PublishSeconds > 0 {
		r.PublishRate = float64(l.published.Load()) / r.PublishSeconds
	}
	var windowStartNS int64
	r.Throughput.WindowStart = "first publish"
	if cfg.Preload {
		fmt.Fprintf(status, "bench: %d requests waiting in the stream after %.1fs; starting cardbridge\n", l.published.Load(), r.PublishSeconds)
		cpu0 = takeCPU(st)
		launched, err := st.startInstances(ctx)
		if err != nil {
			return nil, err
		}
		windowStartNS = int64(launched.Sub(l.t0))
		r.Throughput.WindowStart = "cardbridge launch"
	}

	complete, err := l.awaitOutcomes(ctx, cfg.IdleTimeout, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	// The CPU figures cover the same span as the throughput: up to the
	// last outcome, not the settle time after it.
	cpu1 := takeCPU(st)
	if !complete {
		fmt.Fprintf(status, "bench: gave up waiting with %d of %d outcomes\n", l.completed.Load(), l.published.Load())
	} else if err := l.settle(ctx, cfg.Settle); err != nil {
		return nil, err
	}
	cc.Stop()
	stopSamplers()

	r.summarise(l, windowStartNS, cfg.Warmup, cfg.AllowFailed)
	if st != nil {
		bs, err := st.sandboxStats(ctx)
		if err != nil {
			return nil, err
		}
		r.Bank = bankReport(bs, cfg.BankRateLimit, r.Throughput.WindowSeconds)
		st.sampleMemory()
		r.Processes = st.processReports()
		r.Instances = st.instanceReports(ctx)
		for i, p := range r.Processes {
			r.Processes[i].CPUSeconds = (cpu1.procs[p.PID] - cpu0.procs[p.PID]).Seconds()
		}
		r.CPU = cpuReport(cpu0, cpu1, r.Outcomes.Completed)
		r.Logs = logSummary(st.stopInstances())
	}

	if cfg.Baseline {
		bl, err := baseline(ctx, cfg, st, r)
		if err != nil {
			return nil, err
		}
		r.Baseline = bl
	}
	return r, nil
}

// baseline runs the one-commit-per-request measurement after cardbridge
// has stopped, so that the two do not compete for the machine.
func baseline(ctx context.Context, cfg Config, st *stack, r *Report) (*BaselineReport, error) {
	n := cfg.BaselineRequests
	if n == 0 {
		n = min(r.Requests, DefaultBaselineCap)
	}
	conns := cfg.BaselineConns
	if conns == 0 {
		conns = min(cfg.InFlight, DefaultBaselineConnsCap)
	}
	var dbURL string
	if st != nil {
		dbURL = st.dbURL
	} else {
		var release func()
		var err error
		if dbURL, release, err = externalBaselineSchema(ctx, cfg); err != nil {
			return nil, err
		}
		defer release()
	}
	bl, err := runBaseline(ctx, dbURL, n, conns)
	if err != nil {
		return nil, err
	}
	if bl.PerSecond > 0 {
		bl.Ratio = r.Throughput.PerSecond / bl.PerSecond
		bl.SteadyRatio = r.Throughput.SteadyPerSecond / bl.PerSecond
	}
	if bl.CPU != nil && r.CPU != nil && r.CPU.PostgresMicrosPerRq > 0 {
		bl.PostgresRatio = bl.CPU.PostgresMicrosPerRq / r.CPU.PostgresMicrosPerRq
	}
	return bl, nil
}

// sampleEvery calls f every d until ctx ends.
func sampleEvery(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			f()
		case <-ctx.Done():
			return
		}
	}
}

// cpuSnapshot is the CPU time used so far, per part.
type cpuSnapshot struct {
	at        time.Time
	machine   machineCPU
	machineOK bool
	self      time.Duration         // the bench, with the embedded NATS server
	postgres  map[int]time.Duration // Postgres processes, by pid
	procs     map[int]time.Duration // children, by pid
	instances map[int]bool          // which children are cardbridge
}

func takeCPU(st *stack) cpuSnapshot {
	s := cpuSnapshot{at: time.Now(), procs: map[int]time.Duration{}, instances: map[int]bool{}}
	m, err := readMachineCPU()
	s.machine, s.machineOK = m, err == nil
	s.self, _ = readProcCPU(0)
	s.postgres = readCommandCPU("postgres")
	if st != nil {
		for _, c := range st.running() {
			s.procs[c.pid()], _ = readProcCPU(c.pid())
			s.instances[c.pid()] = true
		}
		if st.sandbox != nil {
			s.procs[st.sandbox.pid()], _ = readProcCPU(st.sandbox.pid())
		}
	}
	return s
}

// cpuReport turns two snapshots into cores used between them. A child
// missing from a (started in between) counts from zero.
func cpuReport(a, b cpuSnapshot, completed int) *CPUReport {
	wall := b.at.Sub(a.at).Seconds()
	if !a.machineOK || !b.machineOK || wall <= 0 {
		return nil
	}
	rep := &CPUReport{Cores: runtime.NumCPU()}
	rep.Busy = (b.machine.busy - a.machine.busy).Seconds() / wall
	var inst time.Duration
	for pid, t := range b.procs {
		d := t - a.procs[pid]
		if b.instances[pid] {
			inst += d
		} else {
			rep.Sandbox += d.Seconds() / wall
		}
	}
	rep.Cardbridge = inst.Seconds() / wall
	rep.BenchAndNATS = (b.self - a.self).Seconds() / wall
	var pg time.Duration
	for pid, t := range b.postgres {
		pg += t - a.postgres[pid]
	}
	rep.Postgres = pg.Seconds() / wall
	rep.Other = max(rep.Busy-rep.Cardbridge-rep.Sandbox-rep.BenchAndNATS-rep.Postgres, 0)
	if completed > 0 {
		rep.CardbridgeMicrosPerRq = inst.Seconds() * 1e6 / float64(completed)
		rep.PostgresMicrosPerRq = pg.Seconds() * 1e6 / float64(completed)
		rep.MachineMicrosPerRq = rep.Busy * wall * 1e6 / float64(completed)
	}
	return rep
}
