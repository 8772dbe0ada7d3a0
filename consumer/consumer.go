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

// Config tunes a Consumer.
type Config struct {
	// Source is the CloudEvent source of the outcome events (CARDBRIDGE_SOURCE).
	Source string
	// RequestSubject is the contract's request subject; a message on
	// RequestSubject.<publisher> comes from that NATS identity (see
	// store.Binding.Publisher). Default employee.card.requested.
	RequestSubject string
	// MaxInFlight bounds the requests at the bank at once. Twice as many
	// are held in all, so that decoding, admission and commits overlap
	// the bank calls of others instead of waiting for a free slot.
	MaxInFlight int
	// RetryFor is the retry budget: how long a request may spend trying the
	// bank, across deliveries and processes, before it is given up as
	// retries_exhausted or bank_outcome_unknown (default 24h). Deliveries
	// that never reached the bank do not spend it.
	RetryFor time.Duration
	// MaxRetryDelay caps the delay between deliveries of a request that
	// failed (default 5 minutes).
	MaxRetryDelay time.Duration
	// Retention is how long the store keeps a request's records
	// (CARDBRIDGE_RETENTION); 0 keeps them for ever. A request whose
	// CloudEvent time is older than Retention less a day is refused as
	// request_expired: it could be one already answered whose records were
	// purged.
	Retention time.Duration
	// KeyRetention is how long the bank is trusted to remember an
	// Idempotency-Key (default mbanq.DefaultKeyRetention); see decision.Policy.
	KeyRetention time.Duration
	// ProbeInterval is the first wait before a paused process probes the
	// fault that paused it (default 1s); it doubles up to 30s.
	ProbeInterval time.Duration
	// AckWait is the ack wait in force on the consumer (default
	// broker.DefaultAckWait): every message held is kept alive with
	// InProgress every third of it.
	AckWait time.Duration
	// ShutdownGrace is how long in-flight requests may run after Run's
	// context ends (default 15s).
	ShutdownGrace time.Duration
	// Admin is the NeoBank's admin user, used only to provision
	// self-service users.
	Admin mbanq.Credentials
	// OfficeID is the office of new self-service users.
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
	// Stream reads OutcomeStream (default CARDS) for the outcomes of
	// requests that may have been answered before their records were lost
	// (answered.go); nil never looks.
	Stream        jetstream.JetStream
	OutcomeStream string
	// AnsweredAfter is the age past which a request without an inbox row
	// is looked for on OutcomeStream (default DefaultAnsweredAfter; at
	// most half the stream's duplicate window).
	AnsweredAfter time.Duration
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

// New returns a Consumer. box seals the self-service passwords.
func New(cfg Config, s *store.Store, bank *mbanq.Client, box *secret.Box) (*Consumer, error) {
	if cfg.Source == "" {
		return nil, errors.New("consumer: Source is required")
	}
	if box == nil {
		return nil, errors.New("consumer: a secret box is required")
	}
	if cfg.RequestSubject == "" {
		cfg.RequestSubject = "employee.card.requested"
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = decision.DefaultRetryFor
	}
	if cfg.MaxRetryDelay <= 0 {
		cfg.MaxRetryDelay = decision.DefaultMaxRetryDelay
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = firstProbe
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = broker.DefaultAckWait
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 15 * time.Second
	}
	if cfg.OfficeID <= 0 {
		cfg.OfficeID = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.KeyRetention <= 0 {
		cfg.KeyRetention = mbanq.DefaultKeyRetention
	}
	if m := KeyMargin(cfg.MaxRetryDelay, cfg.AckWait); cfg.KeyRetention <= m {
		return nil, fmt.Errorf("consumer: KeyRetention %s must be longer than %s (twice the longest retry delay and AckWait)", cfg.KeyRetention, m)
	}
	if cfg.OutcomeStream == "" {
		cfg.OutcomeStream = "CARDS"
	}
	if cfg.AnsweredAfter <= 0 {
		cfg.AnsweredAfter = DefaultAnsweredAfter
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
