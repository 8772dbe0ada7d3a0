package app

import (
	"context"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/internal/console"
	"github.com/cardbridge/cardbridge/internal/observe"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/store"
)

// This file wires what the people who run cardbridge use: metrics,
// tracing, the console and replay. The parts themselves live in packages
// observe and console, and replay in consumer.

// startTelemetry sets up metrics and, when an OTLP endpoint is configured,
// tracing; the consumer, the MBanq client and the relay get its Observers.
func (s *Service) startTelemetry(ctx context.Context) error {
	t, err := observe.New(ctx, observe.Config{TracesURL: s.cfg.Operations.TracesURL, Logger: s.log})
	if err != nil {
		return err
	}
	s.telemetry = t
	if t.Tracing() {
		s.log.Info("tracing: exporting spans over OTLP", "endpoint", secret.RedactURL(s.cfg.Operations.TracesURL))
	}
	return nil
}

// stopTelemetry exports the spans still buffered.
func (s *Service) stopTelemetry() {
	if s.telemetry == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.telemetry.Shutdown(ctx); err != nil {
		s.log.Warn("tracing: flushing spans at shutdown", "err", err)
	}
}

// mountOperations serves /metrics and the console on mux.
func (s *Service) mountOperations(mux *http.ServeMux) {
	probes := observe.Probes{
		Ready: func(ctx context.Context) map[string]bool {
			checks, _ := s.readiness(ctx)
			ok := make(map[string]bool, len(checks))
			for name, state := range checks {
				ok[name] = state == "ok"
			}
			return ok
		},
		Consumer: func(ctx context.Context) (uint64, int, error) {
			info, err := s.cons.Info(ctx)
			if err != nil {
				return 0, 0, err
			}
			return info.NumPending, info.NumAckPending, nil
		},
	}
	for what, err := range map[string]error{"the store": s.telemetry.WatchStore(s.store), "probes": s.telemetry.WatchProbes(probes)} {
		if err != nil {
			// Only a programming error (a second registration) gets here.
			s.log.Error("metrics: watching "+what, "err", err)
		}
	}
	mux.Handle("GET /metrics", s.telemetry.Handler())

	instance, _ := os.Hostname()
	hosts := s.cfg.Operations.ConsoleHosts
	if h, _, err := net.SplitHostPort(s.cfg.HTTPAddr); err == nil && h != "" && !net.ParseIP(h).IsUnspecified() {
		// HTTP_ADDR's own name is one the console is reached by.
		hosts = append(slices.Clip(hosts), h)
	}
	c := console.New(console.Config{
		Data: s.store,
		Live: s.live,
		Replay: func(ctx context.Context, id int64) (store.DeadLetter, error) {
			return consumer.Replay(ctx, s.store, s.js, id)
		},
		Token:    s.cfg.Operations.ConsoleToken,
		Hosts:    hosts,
		Instance: instance,
		Logger:   s.log,
	})
	mux.Handle(console.Prefix, c)
	mux.Handle("GET /{$}", c) // "/" leads to the console
	mode := "read-only, this machine only (loopback connections): set CARDBRIDGE_CONSOLE_TOKEN to reach it from elsewhere"
	if c.CanReplay() {
		mode = "replay enabled"
	}
	s.log.Info("console", "url", "http://"+s.HTTPAddr()+console.Prefix, "mode", mode)
}

// live reads the console's live numbers. Each part is read on its own, so
// a NATS or database hiccup blanks only its own numbers.
func (s *Service) live(ctx context.Context) console.Live {
	snap := s.telemetry.Snapshot()
	l := console.Live{Time: time.Now().UTC(), InFlight: snap.InFlight, Handled: snap.Handled}
	if n, age, err := s.store.OutboxBacklog(ctx); err != nil {
		l.Errors = append(l.Errors, "outbox")
	} else {
		l.OutboxBacklog, l.OutboxOldestSeconds = n, age.Seconds()
	}
	if seq, err := s.lastSeq(ctx, s.cfg.NATS.RequestStream); err != nil {
		l.Errors = append(l.Errors, "request stream")
	} else {
		l.RequestsReceived = seq
	}
	if seq, err := s.lastSeq(ctx, s.cfg.NATS.OutcomeStream); err != nil {
		l.Errors = append(l.Errors, "outcome stream")
	} else {
		l.OutcomesPublished = seq
	}
	if info, err := s.cons.Info(ctx); err != nil {
		l.Errors = append(l.Errors, "consumer")
	} else {
		l.Pending, l.AckPending = info.NumPending, info.NumAckPending
	}
	return l
}

// lastSeq is a stream's last sequence number: how many messages it has
// ever stored, whatever its retention has dropped since.
func (s *Service) lastSeq(ctx context.Context, stream string) (uint64, error) {
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}
