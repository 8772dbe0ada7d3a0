package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"

	"github.com/cardbridge/cardbridge/internal/bench"
	"github.com/cardbridge/cardbridge/internal/observe"
)

const benchSynopsis = `bench [flags]

Load generator and end-to-end benchmark. Publishes employee.card.requested
events, watches card.> for their outcomes, and reports throughput, latency
(publish to outcome), memory and CPU, and whether every request got exactly
one outcome; it exits 1 if not.

Without --nats-url it runs a stack of its own: an embedded NATS server, the
MBanq sandbox (cardbridge sandbox) and --instances cardbridge run processes,
in a schema of their own (--schema, dropped at the end). Other CARDBRIDGE_*
variables of its environment reach the cardbridge processes, for tuning.
With --nats-url it only publishes and subscribes; --source must then be
bound to --client-id there.

Examples:
  cardbridge bench --requests 50000 --in-flight 256 --baseline
  cardbridge bench --rate 1000 --duration 30s --html latency.html
  cardbridge bench --preload --requests 100000
  cardbridge bench --nats-url nats://nats:4222 --source urn:erp:acme --client-id 7 --requests 1000`

func benchCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("bench", benchSynopsis, env)
	cfg := bench.Defaults()
	cfg.DatabaseURL = databaseURL(env)

	fs.IntVar(&cfg.Requests, "requests", cfg.Requests, "number of requests, published as fast as the publish window allows")
	fs.Float64Var(&cfg.Rate, "rate", 0, "publish at this many requests per second instead (with --duration)")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to publish at --rate")
	fs.BoolVar(&cfg.Preload, "preload", false, "publish every request before starting cardbridge, then measure it draining the stream (self-contained only)")

	fs.StringVar(&cfg.NATSURL, "nats-url", "", "drive an existing deployment at this NATS server (default: start a stack of the bench's own)")
	selfContained := fs.Bool("self-contained", false, "start a stack of the bench's own (the default without --nats-url)")
	fs.StringVar(&cfg.Source, "source", cfg.Source, "CloudEvent source of the requests")
	fs.Int64Var(&cfg.ClientID, "client-id", cfg.ClientID, "MBanq client the requests order for")
	fs.Int64Var(&cfg.SavingsAccountID, "savings-account-id", cfg.SavingsAccountID, "deposit account of the binding the bench adds to its own stack")
	fs.Int64Var(&cfg.CardProductID, "card-product-id", cfg.CardProductID, "card product of the binding the bench adds to its own stack")

	fs.IntVar(&cfg.InFlight, "in-flight", cfg.InFlight, "CARDBRIDGE_MAX_IN_FLIGHT of each instance; also the baseline's concurrency")
	fs.IntVar(&cfg.Instances, "instances", cfg.Instances, "cardbridge processes sharing the consumer")
	fs.DurationVar(&cfg.BankLatency, "bank-latency", 0, "delay the sandbox adds to every MBanq call, e.g. 200ms")
	fs.DurationVar(&cfg.BankLatencyJitter, "bank-latency-jitter", 0, "random extra sandbox delay of up to this much")
	fs.Float64Var(&cfg.BankRateLimit, "bank-rate-limit", 0, "the sandbox tenant's limit in calls per second; calls over it are answered 429 with Retry-After (0: none). MBANQ_ADAPTIVE_LIMIT=false in the bench's environment turns cardbridge's limiter off, for comparison")
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "Postgres server of the stack and the baseline (DATABASE_URL)")
	fs.StringVar(&cfg.Schema, "schema", cfg.Schema, "schema the bench creates, uses and drops")
	fs.BoolVar(&cfg.KeepSchema, "keep-schema", false, "do not drop the schema at the end (to inspect it)")
	fs.StringVar(&cfg.CardbridgeBin, "cardbridge-bin", "", "cardbridge executable to start as sandbox and instances (default: this executable)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "LOG_LEVEL of the cardbridge processes")
	fs.StringVar(&cfg.LogDir, "log-dir", "", "keep the children's logs in this directory (default: a temporary one, removed)")

	fs.IntVar(&cfg.Publishers, "publishers", cfg.Publishers, "goroutines publishing")
	fs.IntVar(&cfg.PublishWindow, "publish-window", cfg.PublishWindow, "publishes awaiting JetStream's acknowledgement at most")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "keep listening this long after the last outcome, for late duplicates")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "give up when no outcome arrived for this long")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "give up waiting for outcomes after this long (0: only --idle-timeout)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "leave the requests published in the first this long out of the latency figures (their outcomes are still checked)")

	fs.BoolVar(&cfg.Baseline, "baseline", false, "afterwards, measure one bare commit per request (inbox + outbox row) on the same Postgres and report the ratio")
	fs.IntVar(&cfg.BaselineRequests, "baseline-requests", 0, fmt.Sprintf("commits the baseline makes (0: as many as requests, at most %d)", bench.DefaultBaselineCap))
	fs.IntVar(&cfg.BaselineConns, "baseline-conns", 0, fmt.Sprintf("connections of the baseline (0: --in-flight, at most %d)", bench.DefaultBaselineConnsCap))

	fs.BoolVar(&cfg.AllowFailed, "allow-failed", false, "do not count card.failed outcomes as a failure of the run")
	progress := fs.Bool("progress", false, "print progress once a second on stderr (default: when stderr is a terminal)")
	asJSON := fs.Bool("json", false, "print the report as JSON on stdout (the text report goes to stderr)")
	fs.StringVar(&cfg.HTMLPath, "html", "", "write a latency histogram page to this file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the bench process itself (the load generator and, self-contained, the embedded NATS server) to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *selfContained && cfg.NATSURL != "" {
		return usagef("--self-contained and --nats-url exclude each other")
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if explicit["requests"] && explicit["rate"] {
		return usagef("--requests and --rate exclude each other (--rate publishes rate × duration requests)")
	}
	cfg.Progress = *progress || observe.IsTerminal(env.Stderr)
	if err := cfg.Validate(); err != nil {
		return usagef("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}

	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	report, err := bench.Run(ctx, cfg, env.Stderr)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted")
		}
		return err
	}
	text := env.Stdout
	if *asJSON {
		if err := report.WriteJSON(env.Stdout); err != nil {
			return err
		}
		text = env.Stderr
	}
	if err := report.WriteText(text); err != nil {
		return err
	}
	if cfg.HTMLPath != "" {
		if err := writeFile(cfg.HTMLPath, report.WriteHTML); err != nil {
			return fmt.Errorf("writing %s: %w", cfg.HTMLPath, err)
		}
	}
	if !report.Passed {
		return fmt.Errorf("verification failed: %s", strings.Join(report.Problems, "; "))
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startCPUProfile profiles this process into path until the returned
// function is called. The cardbridge processes and the sandbox are
// profiled through their /debug/pprof instead (CARDBRIDGE_PPROF=true).
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
