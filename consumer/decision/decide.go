// Package decision decides what becomes of a message the consumer
// handles: FaultOf sorts what went wrong into a Fault, and Policy.Decide
// turns a Fault and the facts of a delivery into a Decision (acknowledge,
// give up with card.failed, retry later, hold, pause the process, hand it
// back). Both are pure: no I/O, no clock. The consumer finds the facts and
// applies the decision to the JetStream message.
package decision

import (
	"fmt"
	"time"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/mbanq"
)

// This file is the one place that decides what becomes of a message:
// Decide, a pure function of what went wrong (a Fault), the facts of the
// delivery and the time spent trying the bank. The consumer's handler
// finds the facts and returns Decide's Decision; the code that owns the
// JetStream message (consumer.Consumer.Handle) applies it. The README's
// table of what happens to a message is checked against Decide by a test.

// Fault is what went wrong while handling a delivery, in the terms the
// decision needs. FaultOf is the one function that sorts errors into
// faults; for the bank's errors it goes by mbanq.Classify.
type Fault int

const (
	// FaultNone: the request has its outcome (committed now, or by an
	// earlier delivery).
	FaultNone Fault = iota
	// FaultRequest: the request can never succeed as sent (not a
	// CloudEvent, schema, unbound source); Facts.Reason says which.
	FaultRequest
	// FaultRejected: the bank definitely refused the order (a 4xx of a
	// business rule). No card exists under its Idempotency-Key.
	FaultRejected
	// FaultBank: the bank failed without acting (5xx, 429) or refused the
	// user's token; asking again may succeed. Spends the retry budget.
	FaultBank
	// FaultBankUnknown: the bank may have acted but its answer was not
	// learnt (a timeout, a lost connection, an unreadable answer). Asking
	// again under the same Idempotency-Key finds out. Spends the budget.
	FaultBankUnknown
	// FaultReauth: the bank refused the user's token; the session was
	// dropped, so the next delivery logs in afresh. Spends the budget.
	FaultReauth
	// FaultDeployment: a fault of the deployment, not of the request (a
	// wrong tenant, OAuth client or admin password, a secret key that
	// cannot open stored passwords, a missing role or permission, a bank
	// that cannot be reached or is not trusted). Every request would fail
	// alike: the process pauses.
	FaultDeployment
	// FaultInfra: our own database or NATS failed. The bank was not
	// involved, so the budget is not spent.
	FaultInfra
	// FaultUnrecorded: the card was ordered but its outcome could not be
	// committed. The card is known only to this delivery: it is held for
	// a while before the message is handed back.
	FaultUnrecorded
	// FaultShutdown: the process is stopping.
	FaultShutdown
	// FaultUnstorable: the message's failure could not be recorded because
	// Postgres refuses something in it. It is tried a few times (the
	// refusal might be a passing one), then terminated without a record,
	// with a log line and a metric, so that it cannot hold its place.
	FaultUnstorable
)

var faultNames = [...]string{"none", "request", "rejected", "bank", "bank_unknown", "reauth", "deployment", "infra", "unrecorded", "shutdown", "unstorable"}

func (f Fault) String() string {
	if int(f) < len(faultNames) {
		return faultNames[f]
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// Facts are what Decide needs to know of a delivery besides its Fault.
type Facts struct {
	Fault Fault
	// Reason is the failure reason of a FaultRequest (an event.Reason*).
	Reason string
	// Deliveries is the message's delivery count (NumDelivered, from 1).
	Deliveries uint64
	// Spent is the time spent trying the bank, across deliveries and
	// processes, this delivery included (store.BankRetries.Spent).
	Spent time.Duration
	// Unknown says some try at the bank may have been acted on without its
	// answer being learnt (store.BankRetries.Unknown, or the last call's
	// own mbanq.OutcomeUnknown).
	Unknown bool
	// UnknownFor is how long ago the first such try was made
	// (store.BankRetries.UnknownFor).
	UnknownFor time.Duration
	// RetryAfter is the pause the bank asked for, if any.
	RetryAfter time.Duration
	// Holds is how many times this delivery was already held.
	Holds int
}

// Action is what is done with the message.
type Action int

const (
	// Ack: the outcome is committed (now or by an earlier delivery). Should
	// the ack be lost, the redelivery finds the inbox row and is only
	// acknowledged.
	Ack Action = iota
	// Term: the failure in Decision.Fail is committed as card.failed first,
	// then the message is terminated so it never comes back.
	Term
	// Retry: nothing is committed; the message is handed back
	// (NakWithDelay) to be delivered again after Decision.Delay.
	Retry
	// Hold: the message is kept (InProgress) for Decision.Delay and the
	// commit is tried again in this delivery.
	Hold
	// Pause: nothing is committed; the message is handed back after
	// Decision.Delay and the process stops fetching until the fault of the
	// deployment clears.
	Pause
	// HandBack: nothing is committed; the message is handed back at once
	// (Nak), for another process or a fresh session.
	HandBack
	// Drop: nothing could be committed; the message is terminated (Term)
	// with an error log line naming its stream sequence, subject, size and
	// header names, and cardbridge_messages_dropped_total.
	Drop
)

var actionNames = [...]string{"ack", "term", "retry", "hold", "pause", "hand_back", "drop"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Decision is what becomes of a message.
type Decision struct {
	Action Action
	// Delay before the message comes back (Retry, Pause) or before the
	// commit is tried again (Hold).
	Delay time.Duration
	// Fail is the reason committed as card.failed before a Term.
	Fail string
}

func (d Decision) String() string {
	s := d.Action.String()
	if d.Delay > 0 {
		s += " after " + d.Delay.String()
	}
	if d.Fail != "" {
		s += " as " + d.Fail
	}
	return s
}

// Policy holds the settings Decide applies.
type Policy struct {
	// RetryFor is the retry budget: how long a request may spend trying
	// the bank before it is given up (CARDBRIDGE_RETRY_FOR).
	RetryFor time.Duration
	// MaxDelay caps the delay between deliveries (default 5 minutes).
	MaxDelay time.Duration
	// KeyRetention is how long the bank is trusted to remember an
	// Idempotency-Key (CARDBRIDGE_BANK_KEY_RETENTION, default
	// mbanq.DefaultKeyRetention). A request whose order's answer is unknown
	// is asked again under its key only for that long; after, asking again
	// could make a second card.
	KeyRetention time.Duration
	// KeyMargin is how long before KeyRetention ends an unknown answer is
	// given up: a delivery decided on now may reach the bank that much
	// later (the longest retry delay and AckWait, twice over).
	KeyMargin time.Duration
}

// Constants of the decision.
const (
	// DefaultRetryFor is long enough to ride out a bank's maintenance
	// window.
	DefaultRetryFor = 24 * time.Hour
	// DefaultMaxRetryDelay caps the backoff between deliveries.
	DefaultMaxRetryDelay = 5 * time.Minute
	// maxHolds bounds how often a delivery whose card could not be
	// committed is held before it is handed back: a stalled database must
	// not keep messages from healthy processes for long.
	maxHolds = 3
	// maxUnstorableDeliveries bounds the deliveries of a message whose
	// failure Postgres refuses to store.
	maxUnstorableDeliveries = 3
	// PauseHandBack is the delay of a message handed back by a pausing
	// process, so that it does not bounce straight back to a process that
	// is about to stop fetching.
	PauseHandBack = time.Second
)

// Decide is the one table from a delivery's fault and facts to what
// becomes of its message. It is pure: no I/O, no clock.
func (p Policy) Decide(f Facts) Decision {
	switch f.Fault {
	case FaultNone:
		return Decision{Action: Ack}
	case FaultRequest:
		return Decision{Action: Term, Fail: f.Reason}
	case FaultRejected:
		if f.Unknown {
			// A refusal after a try whose answer is unknown proves nothing
			// of that try (the bank may not have remembered it under its
			// key): a card may exist, and a new key could order another.
			return Decision{Action: Term, Fail: event.ReasonBankOutcomeUnknown}
		}
		return Decision{Action: Term, Fail: event.ReasonBankRejected}
	case FaultBank, FaultBankUnknown, FaultReauth:
		unknown := f.Fault == FaultBankUnknown || f.Unknown
		if unknown && p.KeyExpired(f.UnknownFor) {
			return Decision{Action: Term, Fail: event.ReasonBankOutcomeUnknown}
		}
		if f.Spent >= p.RetryFor {
			if unknown {
				return Decision{Action: Term, Fail: event.ReasonBankOutcomeUnknown}
			}
			return Decision{Action: Term, Fail: event.ReasonRetriesExhausted}
		}
		if f.Fault == FaultReauth && f.Deliveries <= 1 {
			// The session was dropped; the next delivery logs in afresh,
			// so there is no reason to wait.
			return Decision{Action: HandBack}
		}
		return Decision{Action: Retry, Delay: max(p.backoff(f.Deliveries), min(f.RetryAfter, p.LongestDelay()))}
	case FaultDeployment:
		return Decision{Action: Pause, Delay: PauseHandBack}
	case FaultInfra:
		return Decision{Action: Retry, Delay: min(p.backoff(f.Deliveries), MaxInfraDelay)}
	case FaultUnrecorded:
		if f.Holds < maxHolds {
			return Decision{Action: Hold, Delay: time.Second << f.Holds}
		}
		return Decision{Action: Retry, Delay: min(p.backoff(f.Deliveries), MaxInfraDelay)}
	case FaultShutdown:
		return Decision{Action: HandBack}
	case FaultUnstorable:
		if f.Deliveries < maxUnstorableDeliveries {
			return Decision{Action: Retry, Delay: p.backoff(f.Deliveries)}
		}
		return Decision{Action: Drop}
	}
	// An unknown fault is a bug; retrying loses nothing.
	return Decision{Action: Retry, Delay: p.backoff(f.Deliveries)}
}

// MaxInfraDelay caps the delay after a fault of our own database or NATS:
// a request that waited out a long stall is taken again within this long
// of its end, not after the bank's longest retry delay.
const MaxInfraDelay = 30 * time.Second

// backoff grows with the deliveries: 1s, 2s, 4s... capped at MaxDelay, so a
// bank outage is ridden out without hammering it.
func (p Policy) backoff(deliveries uint64) time.Duration {
	if deliveries < 1 {
		deliveries = 1
	}
	return min(time.Second<<min(deliveries-1, 20), p.LongestDelay())
}

// KeyExpired reports whether an answer unknown for that long may no longer
// be asked about under its key: the bank may have forgotten it by the time
// the next try reaches it.
func (p Policy) KeyExpired(unknownFor time.Duration) bool {
	retention := p.KeyRetention
	if retention <= 0 {
		retention = mbanq.DefaultKeyRetention
	}
	return unknownFor >= retention-p.KeyMargin
}

// LongestDelay is the longest delay between deliveries: MaxDelay, or
// DefaultMaxRetryDelay when it is not set.
func (p Policy) LongestDelay() time.Duration {
	if p.MaxDelay <= 0 {
		return DefaultMaxRetryDelay
	}
	return p.MaxDelay
}
