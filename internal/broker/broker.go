// Package broker sets up cardbridge's side of NATS JetStream: the request
// and outcome streams, the shared durable consumer, and an embedded server
// for `cardbridge dev` and the tests.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// Replicas is how many copies of each stream cardbridge creates keep
	// (1 to 5); 0 gives what the deployment can: DefaultReplicas on a
	// cluster that can place them, 1 on a single server. The durable
	// consumer has as many as its stream.
	Replicas int
	// Logger is told which replicas the streams got, and warned of an
	// existing stream that is not replicated on a cluster; nil logs
	// nothing.
	Logger *slog.Logger
}

// DefaultTopology is the contract's naming, with every default of a
// Topology: the one place they are set. The configuration from the
// environment (CARDBRIDGE_REQUEST_STREAM and the like) and the consumer
// refer to these constants.
func DefaultTopology() Topology {
	return Topology{
		RequestStream:   DefaultRequestStream,
		RequestSubjects: []string{"employee.>"},
		RequestSubject:  DefaultRequestSubject,
		OutcomeStream:   DefaultOutcomeStream,
		OutcomeSubjects: []string{"card.>"},
		Consumer:        DefaultConsumer,
		AckWait:         DefaultAckWait,
		MaxAckPending:   DefaultMaxAckPending,
		RequestMaxBytes: DefaultRequestMaxBytes,
		OutcomeMaxAge:   DefaultOutcomeMaxAge,
	}
}

// The contract's names of the streams, the request subject and the durable
// consumer.
const (
	DefaultRequestStream  = "ERP"
	DefaultRequestSubject = "employee.card.requested"
	DefaultOutcomeStream  = "CARDS"
	DefaultConsumer       = "cardbridge"
)

// Defaults of the consumer's and the streams' limits.
const (
	DefaultMaxAckPending   = 10000
	DefaultRequestMaxBytes = 1 << 30
	DefaultOutcomeMaxAge   = 30 * 24 * time.Hour
)

// MaxReplicas is the most copies JetStream keeps of a stream.
const MaxReplicas = 5

// validate names every field of t that JetStream would refuse, or take for
// something else, with what to do about it. A zero limit is JetStream's
// own default, as in a StreamConfig.
func (t Topology) validate() error {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"RequestStream", t.RequestStream}, {"RequestSubject", t.RequestSubject},
		{"OutcomeStream", t.OutcomeStream}, {"Consumer", t.Consumer},
	} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("Topology.%s is empty; set it, or start from DefaultTopology()", f.name))
		}
	}
	if len(t.RequestSubjects) == 0 || len(t.OutcomeSubjects) == 0 {
		errs = append(errs, errors.New("Topology.RequestSubjects and OutcomeSubjects must each name a subject; start from DefaultTopology()"))
	}
	if t.AckWait < 0 {
		errs = append(errs, fmt.Errorf("Topology.AckWait %s must not be negative", t.AckWait))
	}
	if t.MaxAckPending < 0 {
		errs = append(errs, fmt.Errorf("Topology.MaxAckPending %d must not be negative", t.MaxAckPending))
	}
	if t.RequestMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("Topology.RequestMaxBytes %d must not be negative", t.RequestMaxBytes))
	}
	if t.OutcomeMaxAge < 0 {
		errs = append(errs, fmt.Errorf("Topology.OutcomeMaxAge %s must not be negative", t.OutcomeMaxAge))
	}
	if t.Replicas < 0 || t.Replicas > MaxReplicas {
		errs = append(errs, fmt.Errorf("Topology.Replicas %d must be from 1 to %d, or 0 for what the deployment can give", t.Replicas, MaxReplicas))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("broker: %w", errors.Join(errs...))
}

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

// RequestDuplicateWindow is how long JetStream remembers a Nats-Msg-Id on
// the request stream: the least it allows. The window is the whole
// stream's, keyed by Nats-Msg-Id alone whatever the subject, so on a NATS
// that several ERPs share, one ERP could otherwise have another's request
// dropped as a duplicate by publishing its Nats-Msg-Id first (an order
// number is easy to guess), and the victim's publish would succeed with
// duplicate: true and never be answered. cardbridge needs no window there:
// it deduplicates requests on (source, id) in its inbox, so a request
// published twice is answered once.
const RequestDuplicateWindow = 100 * time.Millisecond

// DefaultReplicas is how many copies of a stream cardbridge creates on a
// cluster of three or more JetStream servers: a leader and two followers,
// so that losing any one server costs only a leader election.
const DefaultReplicas = 3

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
//
// Streams it creates are replicated as t.Replicas says, or, when it says
// nothing, as the deployment can give (see replicas). An existing stream
// keeps its replicas; one with a single copy on a cluster is logged as a
// warning, for losing its server stops cardbridge until it returns.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	log := t.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := ensurer{js: js, replicas: t.Replicas, log: log.With("component", "broker")}
	requestReplicas, err := e.stream(ctx, jetstream.StreamConfig{
		Name:       t.RequestStream,
		Subjects:   t.RequestSubjects,
		Storage:    jetstream.FileStorage,
		Duplicates: RequestDuplicateWindow,
		Retention:  jetstream.InterestPolicy,
		MaxBytes:   t.RequestMaxBytes,
		Discard:    jetstream.DiscardNew,
	})
	if err != nil {
		return nil, err
	}
	if _, err := e.stream(ctx, jetstream.StreamConfig{
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
		// up (decision.Policy.Decide) and records the outcome first. A
		// server limit would drop a message silently.
		MaxDeliver:    -1,
		MaxAckPending: t.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// As many copies as the stream it reads, so that the consumer
		// survives the loss of any server the stream survives.
		Replicas: requestReplicas,
	})
	if err != nil {
		return nil, fmt.Errorf("creating consumer %s: %w", t.Consumer, err)
	}
	return cons, nil
}

type ensurer struct {
	js       jetstream.JetStream
	replicas int // as configured; 0: as the deployment can give
	log      *slog.Logger
}

// stream creates the stream cfg names when it is missing, and returns how
// many replicas the stream has.
func (e *ensurer) stream(ctx context.Context, cfg jetstream.StreamConfig) (int, error) {
	st, err := e.js.Stream(ctx, cfg.Name)
	if err == nil {
		info := st.CachedInfo()
		if info.Cluster != nil && info.Cluster.Name != "" && info.Config.Replicas < 2 {
			e.log.Warn("stream is not replicated on a NATS cluster: losing its server stops cardbridge until the server returns; "+
				"raise its replicas with `nats stream edit "+cfg.Name+" --replicas 3`",
				"stream", cfg.Name, "replicas", info.Config.Replicas, "cluster", info.Cluster.Name)
		}
		return max(info.Config.Replicas, 1), nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, fmt.Errorf("looking up stream %s: %w", cfg.Name, err)
	}
	if e.replicas > 0 {
		cfg.Replicas = e.replicas
		if err := e.create(ctx, cfg); err != nil {
			return 0, fmt.Errorf("creating stream %s with %d replicas (CARDBRIDGE_STREAM_REPLICAS): %w", cfg.Name, cfg.Replicas, err)
		}
		return e.created(ctx, cfg)
	}
	cfg.Replicas = 1
	if cluster := e.js.Conn().ConnectedClusterName(); cluster != "" {
		// On a cluster, the servers that place the stream know whether
		// they can keep DefaultReplicas copies: a cluster of fewer
		// JetStream servers (or whose servers lack the room) refuses.
		// That answer, not a count of the servers the client was told
		// of, decides: those need not all run JetStream.
		cfg.Replicas = DefaultReplicas
		err := e.create(ctx, cfg)
		if err == nil {
			return e.created(ctx, cfg)
		}
		if !cannotPlace(err) {
			return 0, fmt.Errorf("creating stream %s with %d replicas: %w", cfg.Name, cfg.Replicas, err)
		}
		e.log.Warn("the NATS cluster cannot keep "+fmt.Sprint(DefaultReplicas)+" copies of the stream; it is created with one, "+
			"and losing its server stops cardbridge until the server returns (set CARDBRIDGE_STREAM_REPLICAS to decide)",
			"stream", cfg.Name, "cluster", cluster, "err", err)
		cfg.Replicas = 1
	}
	if err := e.create(ctx, cfg); err != nil {
		return 0, fmt.Errorf("creating stream %s: %w", cfg.Name, err)
	}
	return e.created(ctx, cfg)
}

func (e *ensurer) create(ctx context.Context, cfg jetstream.StreamConfig) error {
	if _, err := e.js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return err
	}
	return nil
}

// created reads the replicas of a stream just created: another process
// may have created it first, with other settings.
func (e *ensurer) created(ctx context.Context, cfg jetstream.StreamConfig) (int, error) {
	st, err := e.js.Stream(ctx, cfg.Name)
	if err != nil {
		return 0, fmt.Errorf("looking up stream %s: %w", cfg.Name, err)
	}
	n := max(st.CachedInfo().Config.Replicas, 1)
	e.log.Info("stream ready", "stream", cfg.Name, "replicas", n)
	return n, nil
}

// cannotPlace reports whether err is JetStream saying it cannot keep as
// many copies of a stream as were asked for.
func cannotPlace(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errInsufficientResources, errClusterNoPeers, errReplicasNotSupported:
		return true
	}
	return false
}

// JetStream's error codes for a placement it cannot make (nats-server's
// JSInsufficientResourcesErr, JSClusterNoPeersErrF,
// JSStreamReplicasNotSupportedErr).
const (
	errInsufficientResources jetstream.ErrorCode = 10023
	errClusterNoPeers        jetstream.ErrorCode = 10005
	errReplicasNotSupported  jetstream.ErrorCode = 10074
)
