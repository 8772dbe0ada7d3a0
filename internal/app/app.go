// Package app wires cardbridge's parts into the production process: the
// store, the NATS connection and topology, the MBanq client, the consumer,
// the outbox relay and the HTTP health endpoints. `cardbridge run` and
// `cardbridge dev` start the very same Service, and so do the end-to-end
// tests.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/observe"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/relay"
	"github.com/cardbridge/cardbridge/store"
)

// Service is a running cardbridge process.
type Service struct {
	cfg   config.Config
	log   *slog.Logger
	store *store.Store
	nc    *nats.Conn
	js    jetstream.JetStream
	cons  jetstream.Consumer
	http  *http.Server
	ln    net.Listener

	consumer *consumer.Consumer
	relay    *relay.Relay
	// telemetry: metrics and tracing (operations.go).
	telemetry *observe.Telemetry
	// streams is /readyz's check of the streams (http.go).
	streams streamCheck
}

// Start connects to everything cfg names and checks it, but handles no
// request until Run. It refuses to start while migrations are pending,
// unless cfg.AutoMigrate applies them.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *Service, err error) {
	// Lines logged with a request's context name the request (observe.Logger).
	log = observe.Logger(log)
	s := &Service{cfg: cfg, log: log}
	for _, w := range cfg.Warnings {
		log.Warn("configuration: " + w)
	}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if err := s.startTelemetry(ctx); err != nil {
		return nil, err
	}

	box, err := secret.NewBox(cfg.SecretKey, cfg.PreviousSecretKeys...)
	if err != nil {
		return nil, fmt.Errorf("CARDBRIDGE_SECRET_KEY: %w", err)
	}
	s.store, err = store.Open(ctx, store.Options{URL: cfg.DatabaseURL, Logger: log, Observer: s.telemetry.Store(), SealingKey: box.KeyID()})
	if err != nil {
		return nil, err
	}
	if cfg.AutoMigrate {
		if err := s.store.MigrateUp(ctx, logWriter{log}); err != nil {
			return nil, err
		}
	} else if err := s.store.CheckMigrations(ctx); err != nil {
		return nil, err
	}

	s.nc, err = nats.Connect(cfg.NATSURL,
		nats.Name("cardbridge"),
		nats.Timeout(10*time.Second),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(false),
		// A server that stops answering without closing the connection
		// (a host lost, a network that drops packets) is given up after
		// natsPingInterval times natsMaxPingsOut or so, and another
		// server of the cluster is taken; the client's default (two
		// minutes, twice) would leave the process taking and publishing
		// nothing for minutes.
		nats.PingInterval(natsPingInterval),
		nats.MaxPingsOutstanding(natsMaxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", secret.RedactURL(nc.ConnectedUrl())) }),
	)
	if err != nil {
		// NATS_URL may carry a password or a token, and an error about a
		// URL that does not parse quotes it whole.
		return nil, fmt.Errorf("connecting to NATS at %s: %s", secret.RedactURL(cfg.NATSURL), secret.RedactURLIn(err.Error(), cfg.NATSURL))
	}
	// An acknowledgement that never comes (a leader change, say) must not
	// hold its place among the client's pending publishes for ever.
	s.js, err = jetstream.New(s.nc, jetstream.WithPublishAsyncTimeout(relay.DefaultPublishWait))
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	s.cons, err = broker.Ensure(ctx, s.js, s.topology())
	if err != nil {
		return nil, err
	}
	if err := s.alignAckWait(ctx); err != nil {
		return nil, err
	}

	bank, err := mbanq.New(mbanq.Config{
		BaseURL:             cfg.MBanq.BaseURL,
		TenantID:            cfg.MBanq.TenantID,
		ClientID:            cfg.MBanq.ClientID,
		ClientSecret:        cfg.MBanq.ClientSecret,
		MaxAttempts:         cfg.MBanq.MaxAttempts,
		AllowPlainHTTP:      cfg.MBanq.AllowPlainHTTP,
		RequestTimeout:      cfg.MBanq.RequestTimeout,
		ConnectTimeout:      cfg.MBanq.ConnectTimeout,
		DisableLimiter:      !cfg.MBanq.AdaptiveLimit,
		TLSHandshakeTimeout: cfg.MBanq.TLSHandshakeTimeout,
		Logger:              log,
		Observer:            s.telemetry.MBanq(),
	})
	if err != nil {
		return nil, fmt.Errorf("MBanq client: %w", err)
	}
	s.relay, err = relay.New(s.store, s.js, relay.Config{Logger: log, Observer: s.telemetry.Relay(), DrainLimit: relayDrain})
	if err != nil {
		return nil, err
	}
	// Requests that may have been answered before the database lost
	// commits are looked for on the outcome stream once older than half
	// its duplicate window (consumer/answered.go).
	answeredAfter := consumer.DefaultAnsweredAfter
	if st, err := s.js.Stream(ctx, cfg.NATS.OutcomeStream); err == nil && st.CachedInfo().Config.Duplicates > 0 {
		answeredAfter = st.CachedInfo().Config.Duplicates / 2
	}
	s.consumer, err = consumer.New(consumer.Config{
		Source:            cfg.Source,
		RequestSubject:    cfg.NATS.RequestSubject,
		MaxInFlight:       cfg.MaxInFlight,
		RetryFor:          cfg.RetryFor,
		MaxRetryDelay:     cfg.RetryDelayMax,
		KeyRetention:      cfg.BankKeyRetention,
		Retention:         cfg.Retention,
		AckWait:           s.cons.CachedInfo().Config.AckWait, // the one in force
		ShutdownGrace:     workGrace,
		Admin:             mbanq.Credentials{Username: cfg.MBanq.AdminUsername, Password: cfg.MBanq.AdminPassword},
		OfficeID:          cfg.MBanq.OfficeID,
		SelfServiceRoleID: cfg.MBanq.SelfServiceRoleID,
		Logger:            log,
		Observer:          s.telemetry.Consumer(),
		Outcomes:          s.relay,
		Stream:            s.js,
		OutcomeStream:     cfg.NATS.OutcomeStream,
		AnsweredAfter:     answeredAfter,
	}, s.store, bank, box)
	if err != nil {
		return nil, err
	}

	s.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTP_ADDR: %w", err)
	}
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

func (s *Service) topology() broker.Topology {
	t := broker.DefaultTopology()
	t.RequestStream = s.cfg.NATS.RequestStream
	t.RequestSubject = s.cfg.NATS.RequestSubject
	t.OutcomeStream = s.cfg.NATS.OutcomeStream
	t.Consumer = s.cfg.NATS.Consumer
	t.AckWait = s.cfg.NATS.AckWait
	t.RequestMaxBytes = s.cfg.NATS.RequestMaxBytes
	t.OutcomeMaxAge = s.cfg.NATS.OutcomeRetention
	t.Replicas = s.cfg.NATS.StreamReplicas
	t.Logger = s.log
	return t
}

// alignAckWait brings the consumer's ack wait to CARDBRIDGE_ACK_WAIT where
// broker.AlignAckWait does, and says what it did, or why the consumer keeps
// another ack wait. The process sends InProgress by the ack wait in force.
func (s *Service) alignAckWait(ctx context.Context) error {
	before := s.cons.CachedInfo().Config.AckWait
	cons, err := broker.AlignAckWait(ctx, s.js, s.cons, s.topology(), s.cfg.NATS.AckWaitSet)
	switch {
	case errors.Is(err, broker.ErrAckWaitKept):
		s.log.Warn("the consumer's ack wait could not be changed and is kept; messages of a process that dies are redelivered after it (let cardbridge's NATS user update the consumer, or set its ack wait by hand)",
			"consumer", s.cfg.NATS.Consumer, "ack_wait", cons.CachedInfo().Config.AckWait.String(), "err", err)
		s.cons = cons
		return nil
	case err != nil:
		return err
	}
	s.cons = cons
	now := cons.CachedInfo().Config.AckWait
	switch {
	case now != before:
		s.log.Info("consumer's ack wait changed", "consumer", s.cfg.NATS.Consumer, "from", before.String(), "to", now.String())
	case now != s.cfg.NATS.AckWait:
		s.log.Warn("the consumer's ack wait was set by hand and is kept; messages of a process that dies are redelivered after it (set CARDBRIDGE_ACK_WAIT to change it)",
			"consumer", s.cfg.NATS.Consumer, "ack_wait", now.String(), "default", s.cfg.NATS.AckWait.String())
	}
	return nil
}

// How often the connection to NATS is checked, and how many checks may go
// unanswered before it is given up: a server that stopped answering is
// noticed within 10 to 15 seconds.
const (
	natsPingInterval = 5 * time.Second
	natsMaxPingsOut  = 2
)

// HTTPAddr is the address the health endpoints listen on.
func (s *Service) HTTPAddr() string { return s.ln.Addr().String() }

// Store is the service's store (for dev and tests).
func (s *Service) Store() *store.Store { return s.store }

// ShutdownGrace is the longest a shutdown takes (SIGTERM to exit), whatever
// Postgres, NATS or the bank do. In-flight requests may run for workGrace
// of it; then the relay has relayDrain to collect its last
// acknowledgements, delete their rows and sweep, and what is left of the
// grace goes to closing. A shutdown that still runs at ShutdownLimit (the
// grace) is ended there, as a crash would end it.
const (
	ShutdownGrace = 15 * time.Second
	ShutdownLimit = ShutdownGrace
	workGrace     = 9 * time.Second
	relayDrain    = 3 * time.Second
	closeWait     = time.Second
)

// ErrShutdownOverran is returned by Run when a shutdown did not finish
// within ShutdownLimit.
var ErrShutdownOverran = errors.New("shutdown did not finish in time; stopped anyway: requests still held come back after AckWait and unpublished outcomes stay in the outbox, as after a crash")

// Run consumes and relays until ctx ends, then shuts down gracefully: stop
// fetching, let in-flight requests finish (ShutdownGrace), flush the
// relay, close. It returns nil after a clean shutdown, and
// ErrShutdownOverran, without waiting for what is left, when that took
// longer than ShutdownLimit: every wait has a bound of its own, and this
// one makes sure their sum cannot hold a stop.
func (s *Service) Run(ctx context.Context) error {
	overran := make(chan struct{})
	limit := context.AfterFunc(ctx, func() { time.AfterFunc(ShutdownLimit, func() { close(overran) }) })
	defer limit()
	finished := make(chan error, 1)
	go func() { finished <- s.run(ctx) }()
	select {
	case err := <-finished:
		return err
	case <-overran:
		s.log.Error("shutdown overran its limit", "limit", ShutdownLimit, "err", ErrShutdownOverran)
		return ErrShutdownOverran
	}
}

func (s *Service) run(ctx context.Context) error {
	defer s.close()
	s.log.Info("cardbridge running", "http", s.HTTPAddr(), "consumer", s.cfg.NATS.Consumer, "source", s.cfg.Source)
	g, gctx := errgroup.WithContext(ctx)
	consumerDone := make(chan struct{})
	g.Go(func() error {
		defer close(consumerDone)
		return s.consumer.Run(gctx, s.cons)
	})
	g.Go(func() error {
		// The relay outlives the consumer so that outcomes committed by the
		// last in-flight requests are published before exit.
		relayCtx, cancel := context.WithCancel(context.WithoutCancel(gctx))
		defer cancel()
		go func() {
			<-consumerDone
			cancel()
		}()
		return s.relay.Run(relayCtx)
	})
	g.Go(func() error {
		s.purge(gctx)
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("HTTP server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.http.Shutdown(shutdown)
	})
	err := g.Wait()
	s.log.Info("cardbridge stopped")
	return err
}

func (s *Service) close() {
	if s.nc != nil {
		_ = s.nc.Drain()
	}
	if s.store != nil {
		// Closing waits for the connections in use; one stuck on a server
		// that does not answer would hold the stop past its grace. What
		// is left is left to the process's exit: every write it carried
		// was either committed or is retried by a redelivery.
		closed := make(chan struct{})
		go func() {
			s.store.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(closeWait):
			s.log.Warn("database connections still busy at exit; left to the process's end", "waited", closeWait)
		}
	}
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.stopTelemetry()
}

// logWriter sends the migrator's progress lines to the log.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Info("migration", "step", string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && p[len(p)-1] == '\n' {
		p = p[:len(p)-1]
	}
	return p
}

// purgeEvery is how often a process purges what the retention says is too
// old; every process does, and they share the work.
const purgeEvery = time.Hour

// purge deletes, each purgeEvery until ctx ends (the first time a minute
// after start), the records older than the retention (store.Purge).
func (s *Service) purge(ctx context.Context) {
	r := store.Retention{Rows: s.cfg.Retention, DeadLetterBodies: s.cfg.DeadLetterBodyRetention}
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, err := s.store.Purge(ctx, r)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("purging records past their retention", "err", err)
		case p != store.Purged{}:
			s.log.Info("purged records past their retention", "requests", p.Requests, "dead_letters", p.DeadLetters,
				"dead_letter_bodies", p.Bodies, "retry_records", p.Retries)
		}
		t.Reset(purgeEvery)
	}
}
