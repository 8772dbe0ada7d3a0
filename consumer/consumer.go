package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/store"
)

// Config tunes a Consumer. A zero field takes its default (the Default
// constants, applied by withDefaults); a negative one is refused by New.
type Config struct {
	// Source is the CloudEvent source of the outcome events (CARDBRIDGE_SOURCE).
	Source string
	// RequestSubject is the contract's request subject; a message on
	// RequestSubject.<publisher> comes from that NATS identity (see
	// store.Binding.Publisher). Default DefaultRequestSubject.
	RequestSubject string
	// MaxInFlight bounds the requests at the bank at once. Twice as many
	// are held in all, so that decoding, admission and commits overlap
	// the bank calls of others instead of waiting for a free slot
	// (default DefaultMaxInFlight).
	MaxInFlight int
	// RetryFor is the retry budget: how long a request may spend trying the
	// bank, across deliveries and processes, before it is given up as
	// retries_exhausted or bank_outcome_unknown (default DefaultRetryFor).
	// Deliveries that never reached the bank do not spend it.
	RetryFor time.Duration
	// MaxRetryDelay caps the delay between deliveries of a request that
	// failed (default DefaultMaxRetryDelay).
	MaxRetryDelay time.Duration
	// Retention is how long the store keeps a request's records
	// (CARDBRIDGE_RETENTION); 0 keeps them for ever. A request whose
	// CloudEvent time is older than Retention less a day is refused as
	// request_expired: it could be one already answered whose records were
	// purged.
	Retention time.Duration
	// KeyRetention is how long the bank is trusted to remember an
	// Idempotency-Key (default DefaultKeyRetention); see decision.Policy.
	KeyRetention time.Duration
	// ProbeInterval is the first wait before a paused process probes the
	// fault that paused it (default DefaultProbeInterval); it doubles up
	// to 30s.
	ProbeInterval time.Duration
	// AckWait is the ack wait in force on the consumer (default
	// DefaultAckWait): every message held is kept alive with
	// InProgress every third of it.
	AckWait time.Duration
	// ShutdownGrace is how long in-flight requests may run after Run's
	// context ends (default DefaultShutdownGrace).
	ShutdownGrace time.Duration
	// Admin is the NeoBank's admin user, used only to provision
	// self-service users.
	Admin mbanq.Credentials
	// OfficeID is the office of new self-service users (default
	// DefaultOfficeID).
	OfficeID int64
	// SelfServiceRoleID is the role of new self-service users; 0 discovers
	// it from the roles list.
	SelfServiceRoleID int64
	Logger            *slog.Logger
	// Observer is told what happens to each message, for metrics and
	// tracing (package observe); nil observes nothing.
	Observer Observer
	// Outcomes publishes each outcome event as soon as it is committed
	// (package relay); nil leaves them to the relay's sweep.
	Outcomes Outcomes
	// Stream reads OutcomeStream (default DefaultOutcomeStream) for the
	// outcomes of requests that may have been answered before their
	// records were lost (answered.go); nil never looks.
	Stream        jetstream.JetStream
	OutcomeStream string
	// AnsweredAfter is the age past which a request without an inbox row
	// is looked for on OutcomeStream (default DefaultAnsweredAfter; at
	// most half the stream's duplicate window).
	AnsweredAfter time.Duration
}

// Defaults of Config, besides DefaultAnsweredAfter (answered.go). The
// retry budget's belong to the decision (package decision). The
// configuration from the environment takes the same values; its tests
// hold them equal.
const (
	DefaultRetryFor       = decision.DefaultRetryFor
	DefaultMaxRetryDelay  = decision.DefaultMaxRetryDelay
	DefaultRequestSubject = broker.DefaultRequestSubject
	DefaultOutcomeStream  = broker.DefaultOutcomeStream
	DefaultAckWait        = broker.DefaultAckWait
	DefaultKeyRetention   = mbanq.DefaultKeyRetention
	DefaultMaxInFlight    = 256
	DefaultProbeInterval  = firstProbe
	DefaultShutdownGrace  = 15 * time.Second
	// DefaultOfficeID is office 1, the first office of a tenant.
	DefaultOfficeID = 1
)

// withDefaults returns c with every zero field at its default: the one
// place the consumer's defaults are applied.
func (c Config) withDefaults() Config {
	if c.RequestSubject == "" {
		c.RequestSubject = DefaultRequestSubject
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.RetryFor == 0 {
		c.RetryFor = DefaultRetryFor
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if c.KeyRetention == 0 {
		c.KeyRetention = DefaultKeyRetention
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.OfficeID == 0 {
		c.OfficeID = DefaultOfficeID
	}
	if c.OutcomeStream == "" {
		c.OutcomeStream = DefaultOutcomeStream
	}
	if c.AnsweredAfter == 0 {
		c.AnsweredAfter = DefaultAnsweredAfter
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate names every field of c, with its defaults applied, that is
// missing or out of range, and what to set.
func (c Config) validate() error {
	var errs []error
	if c.Source == "" {
		errs = append(errs, errors.New("Config.Source is required: the CloudEvent source of the outcome events"))
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"MaxInFlight", int64(c.MaxInFlight)}, {"OfficeID", c.OfficeID}} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("Config.%s %d must be positive (0 for the default)", n.name, n.v))
		}
	}
	if c.SelfServiceRoleID < 0 {
		errs = append(errs, fmt.Errorf("Config.SelfServiceRoleID %d must be positive (0 to discover it)", c.SelfServiceRoleID))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"RetryFor", c.RetryFor}, {"MaxRetryDelay", c.MaxRetryDelay}, {"KeyRetention", c.KeyRetention},
		{"ProbeInterval", c.ProbeInterval}, {"AckWait", c.AckWait}, {"ShutdownGrace", c.ShutdownGrace},
		{"AnsweredAfter", c.AnsweredAfter},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("Config.%s %s must be positive (0 for the default)", d.name, d.v))
		}
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("Config.Retention %s must be positive (0 keeps the records for ever)", c.Retention))
	}
	if m := KeyMargin(c.MaxRetryDelay, c.AckWait); c.KeyRetention > 0 && c.KeyRetention <= m {
		errs = append(errs, fmt.Errorf("Config.KeyRetention %s must be longer than %s (twice the longest retry delay and AckWait); raise it or shorten MaxRetryDelay", c.KeyRetention, m))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("consumer: %w", errors.Join(errs...))
}

// Outcomes publishes committed outcome events. A publish that fails is no
// concern of the consumer: the event's outbox row stays until a sweep
// publishes it.
type Outcomes interface {
	Committed(ctx context.Context, e store.OutboxEvent)
}

// Consumer handles card requests from a JetStream consumer.
type Consumer struct {
	cfg   Config
	store *store.Store
	bank  *mbanq.Client
	log   *slog.Logger
	users *userDirectory
	// bankSlots holds one token per request at the bank.
	bankSlots chan struct{}
	policy    decision.Policy
	gate      gate
	// answered looks for outcomes of requests whose records may have
	// been lost (answered.go); nil when Config.Stream is.
	answered *answered
}

// New returns a Consumer. box seals the self-service passwords. It refuses
// a Config with a missing or out-of-range field, naming each.
func New(cfg Config, s *store.Store, bank *mbanq.Client, box *secret.Box) (*Consumer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if box == nil {
		return nil, errors.New("consumer: a secret box is required to seal the self-service passwords")
	}
	log := cfg.Logger.With("component", "consumer")
	cfg.observer().Paused("") // running, until a fault of the deployment says otherwise
	return &Consumer{
		cfg:       cfg,
		store:     s,
		bank:      bank,
		log:       log,
		users:     newUserDirectory(s, bank, box, cfg, log),
		bankSlots: make(chan struct{}, cfg.MaxInFlight),
		policy: decision.Policy{RetryFor: cfg.RetryFor, MaxDelay: cfg.MaxRetryDelay, KeyRetention: cfg.KeyRetention,
			KeyMargin: KeyMargin(cfg.MaxRetryDelay, cfg.AckWait)},
		gate:     gate{observe: cfg.observer().Paused},
		answered: newAnswered(cfg, log),
	}, nil
}

// Run pulls messages from cons until ctx ends. Then it stops fetching,
// gives in-flight requests ShutdownGrace to finish, and hands messages
// that arrive after that back to JetStream for prompt redelivery.
// It fetches only as many messages as it has free handlers (see puller),
// so every message it holds is being worked on and kept alive.
// While the process is paused by a fault of the deployment it fetches
// nothing, and probes the fault until it clears.
func (c *Consumer) Run(ctx context.Context, cons jetstream.Consumer) error {
	// Handling runs on a context that outlives ctx by the grace period, so
	// a shutdown does not cut a bank call or a commit in half.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(c.cfg.ShutdownGrace, cancelWork) })
	defer stop()

	p := newPuller(cons, 2*c.cfg.MaxInFlight, func(msg jetstream.Msg) { c.Handle(work, msg) }, c.gate.paused, c.log)
	defer p.close()
	for ctx.Err() == nil {
		if c.gate.paused() {
			c.waitForResume(ctx)
			continue
		}
		// A pause stops the fetch at once, also while it waits for a
		// free handler.
		stopFetch := make(chan struct{})
		var once sync.Once
		c.gate.fetching(func() { once.Do(func() { close(stopFetch) }) })
		p.fetch(ctx, stopFetch)
		c.gate.fetching(nil)
	}
	return nil
}

// KeyMargin is how long before the bank's key retention ends a request whose
// order's answer is unknown is given up: the longest a decision can take to
// reach the bank (the longest retry delay, AckWait), twice over.
func KeyMargin(maxRetryDelay, ackWait time.Duration) time.Duration {
	return 2 * (maxRetryDelay + ackWait)
}
