package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cardbridge/cardbridge/internal/observe"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

func sandboxCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("sandbox", "sandbox [flags]\n\nThe MBanq sandbox as a standalone HTTP server: MBanq's paths, headers, bodies,\nstatus codes and Fineract errors, seeded with a demo tenant (or --seed), with\nfault injection. Faults can be changed while it runs: PUT /_sandbox/faults.\nInspect users and cards at GET /_sandbox/users and /_sandbox/cards.", env)
	addr := fs.String("addr", env.getenvOr("SANDBOX_ADDR", "127.0.0.1:8090"), "listen address (SANDBOX_ADDR)")
	seedPath := fs.String("seed", "", "JSON seed file (default: the built-in demo tenant)")
	var f sandbox.Faults
	fs.Var((*durationFlag)(&f.Latency), "latency", "delay added to every API answer, e.g. 200ms")
	fs.Var((*durationFlag)(&f.LatencyJitter), "latency-jitter", "random extra delay of up to this much")
	fs.Float64Var(&f.ServerErrorRate, "error-rate", 0, "fraction of requests answered 500 without being processed")
	fs.Float64Var(&f.RateLimitRate, "rate-limit-rate", 0, "fraction of requests answered 429")
	fs.Float64Var(&f.TenantRateLimit, "rate-limit", 0, "the tenant's limit in calls per second (a token bucket of one second's worth); calls over it are answered 429 with Retry-After (0: no limit)")
	fs.Var((*durationFlag)(&f.RetryAfter), "retry-after", "Retry-After sent with 429 answers")
	fs.Float64Var(&f.LostResponseRate, "lost-response-rate", 0, "fraction of successful POSTs whose connection is dropped before the answer")
	fs.Float64Var(&f.GarbledResponseRate, "garbled-response-rate", 0, "fraction of successful POSTs answered 200 with a body that does not carry the result ({}, cut in half, or empty); a retry with the same Idempotency-Key gets the real answer")
	fs.Var((*durationFlag)(&f.TokenLifetime), "token-lifetime", "lifetime of access tokens (default 1h)")
	if err := parse(fs, args); err != nil {
		return err
	}
	// The sandbox stands in for the bank, whose CPU is not ours: on a
	// bench it shares the cores with what is measured, so it collects
	// garbage as rarely as cardbridge does. Its memory holds every card it
	// made, so it gets no soft limit.
	tuneGC(env, 0)
	seed := sandbox.DefaultSeed()
	if *seedPath != "" {
		var err error
		if seed, err = sandbox.LoadSeed(*seedPath); err != nil {
			return err
		}
	}
	sb := sandbox.New(seed)
	if err := sb.SetFaults(f); err != nil {
		return usagef("%v", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var handler http.Handler = sb
	if env.getenv("CARDBRIDGE_PPROF") == "true" {
		// For profiling the sandbox under a bench (bench passes the
		// variable on); off unless asked for.
		mux := http.NewServeMux()
		observe.MountProfiles(mux)
		mux.Handle("/", sb)
		handler = mux
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(env.Stdout, "MBanq sandbox listening on http://%s (tenant %q)\n", ln.Addr(), seed.TenantID)
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// durationFlag sets a sandbox.Duration from a Go duration string.
type durationFlag sandbox.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }
func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = durationFlag(v)
	return nil
}
