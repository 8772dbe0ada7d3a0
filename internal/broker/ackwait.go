package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Ack waits of the request consumer.
const (
	// DefaultAckWait is how long JetStream waits for a word from the process
	// holding a message before it hands the message to another. A process
	// holds only messages it works on, and says so every third of the ack
	// wait (InProgress), so a live process keeps its slow work while the
	// messages of a killed one go to another process within DefaultAckWait:
	// their outcomes come within 10 seconds of the kill.
	DefaultAckWait = 6 * time.Second
	// LegacyAckWait is the ack wait cardbridge gave the consumer it created
	// before the default became DefaultAckWait; with it, the requests of a
	// killed process waited a minute.
	LegacyAckWait = 60 * time.Second
)

// AlignAckWait brings the ack wait of an existing consumer (of Ensure) to
// t.AckWait when the operator chose it (chosen: CARDBRIDGE_ACK_WAIT is
// set), or when the consumer has LegacyAckWait, cardbridge's own earlier
// default. Any other ack wait was set by hand and is kept. It returns the
// consumer as it is now: its CachedInfo().Config.AckWait is the ack wait
// in force, by which the process must send InProgress. When an earlier
// default cannot be changed (the NATS user may not update the consumer),
// it returns the consumer as it is and an error wrapping ErrAckWaitKept.
func AlignAckWait(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, t Topology, chosen bool) (jetstream.Consumer, error) {
	cfg := cons.CachedInfo().Config
	if cfg.AckWait == t.AckWait || (!chosen && cfg.AckWait != LegacyAckWait) {
		return cons, nil
	}
	cfg.AckWait = t.AckWait
	updated, err := js.UpdateConsumer(ctx, t.RequestStream, cfg)
	switch {
	case err == nil:
		return updated, nil
	case !chosen:
		// Not asked for: an earlier default brought to the new one. The
		// process runs by the ack wait in force rather than not at all.
		return cons, fmt.Errorf("%w: setting the ack wait of consumer %s to %s: %w", ErrAckWaitKept, t.Consumer, t.AckWait, err)
	}
	return nil, fmt.Errorf("setting the ack wait of consumer %s to %s: %w", t.Consumer, t.AckWait, err)
}

// ErrAckWaitKept is returned, with the consumer as it is, when AlignAckWait
// could not bring an earlier default to the new one (the NATS user may not
// update the consumer, say): the process runs by the ack wait in force.
var ErrAckWaitKept = errors.New("the consumer's ack wait could not be changed and is kept")
