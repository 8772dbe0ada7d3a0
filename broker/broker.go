// Package broker sets up cardbridge's side of NATS JetStream: the request
// and outcome streams, the shared durable consumer, and an embedded server
// for `cardbridge dev` and the tests.
package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Topology names what cardbridge consumes from and publishes to.
type Topology struct {
	RequestStream   string   // ERP
	RequestSubjects []string // employee.>
	RequestSubject  string   // employee.card.requested: the consumer's filter
	OutcomeStream   string   // CARDS
	OutcomeSubjects []string // card.>
	Consumer        string   // cardbridge
	AckWait         time.Duration
	MaxAckPending   int
	// RequestMaxBytes bounds the request stream's storage. A full stream
	// refuses new requests (the ERP's publish fails) rather than dropping
	// one that waits.
	RequestMaxBytes int64
	// OutcomeMaxAge is how long outcome events are kept for subscribers.
	OutcomeMaxAge time.Duration
}

// DefaultTopology is the contract's naming.
func DefaultTopology() Topology {
	return Topology{
		RequestStream:   "ERP",
		RequestSubjects: []string{"employee.>"},
		RequestSubject:  "employee.card.requested",
		OutcomeStream:   "CARDS",
		OutcomeSubjects: []string{"card.>"},
		Consumer:        "cardbridge",
		AckWait:         DefaultAckWait,
		MaxAckPending:   10000,
		RequestMaxBytes: DefaultRequestMaxBytes,
		OutcomeMaxAge:   DefaultOutcomeMaxAge,
	}
}

// Defaults of the streams' limits.
const (
	DefaultRequestMaxBytes = 1 << 30
	DefaultOutcomeMaxAge   = 30 * 24 * time.Hour
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id on the
// outcome stream. An outcome is published again only when its outbox row
// outlived the publish: a failed or unconfirmed publish (swept after about
// 5 seconds), or a process killed between JetStream's ack and the batched
// delete (at most 50 ms of outcomes), whose rows another process sweeps
// within seconds, or the same process when it restarts. Two minutes (the
// server's default) covers all of that except a lone process that stays
// down longer, or a publish that timed out after the server stored it
// during a long outage: for rows that old the relay looks in the stream
// before publishing (relay/stale.go). It is set explicitly so the
// guarantee does not rest on a default.
const DuplicateWindow = 2 * time.Minute

// Ensure creates the streams and the durable consumer when they are
// missing. Existing ones are used as they are: an operator may have tuned
// them, and cardbridge must not undo that on every start.
//
// The streams it creates have limits that never drop a request that has
// not been processed: the request stream is a work queue (a request leaves
// it once acknowledged or terminated, its outcome committed) with no age
// limit, so a request waits as long as its retry budget and any pause
// need; its size is bounded, and a full stream refuses new requests rather
// than discarding waiting ones. Outcome events are kept for OutcomeMaxAge.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, error) {
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:       t.RequestStream,
		Subjects:   t.RequestSubjects,
		Storage:    jetstream.FileStorage,
		Duplicates: DuplicateWindow,
		Retention:  jetstream.InterestPolicy,
		MaxBytes:   t.RequestMaxBytes,
		Discard:    jetstream.DiscardNew,
	}); err != nil {
		return nil, err
	}
	if err := ensureStream(ctx, js, jetstream.StreamConfig{
		Name:       t.OutcomeStream,
		Subjects:   t.OutcomeSubjects,
		Storage:    jetstream.FileStorage,
		Duplicates: DuplicateWindow,
		MaxAge:     t.OutcomeMaxAge,
	}); err != nil {
		return nil, err
	}
	cons, err := js.Consumer(ctx, t.RequestStream, t.Consumer)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("looking up consumer %s: %w", t.Consumer, err)
	}
	cons, err = js.CreateConsumer(ctx, t.RequestStream, jetstream.ConsumerConfig{
		Durable:     t.Consumer,
		Description: "cardbridge: employee card requests",
		// The contract's subject, and one subject per ERP below it
		// (employee.card.requested.<publisher>), which a NATS server with
		// authorization lets only that ERP publish on (Binding.Publisher).
		FilterSubjects: []string{t.RequestSubject, t.RequestSubject + ".*"},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        t.AckWait,
		// No delivery limit at the server: cardbridge decides when to give
		// up (consumer.Policy.Decide) and records the outcome first. A
		// server limit would drop a message silently.
		MaxDeliver:    -1,
		MaxAckPending: t.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", t.Consumer, err)
	}
	return cons, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	_, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("looking up stream %s: %w", cfg.Name, err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("creating stream %s: %w", cfg.Name, err)
	}
	return nil
}
