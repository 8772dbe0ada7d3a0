package consumer

import (
	"context"

	"github.com/cardbridge/cardbridge/event"
)

// Observer is told what happens to each message, for metrics and tracing.
// Package observe implements it; a nil Config.Observer observes nothing.
// Its methods are called on the handling path, so they must be cheap and
// must not block.
type Observer interface {
	// Delivery starts following one delivery of a message, delivered for
	// the deliveries-th time.
	Delivery(ctx context.Context, deliveries uint64) Observation
	// UserProvisioned is told that a client's self-service user was
	// created (or adopted) at MBanq.
	UserProvisioned(clientID int64)
	// Paused is told that the process paused for the fault of the
	// deployment named code, or resumed (code "").
	Paused(code string)
	// AnsweredScan is told of each scan of the outcome stream for
	// requests that may have been answered before their records were
	// lost: the messages it read, and its error (nil when it read all it
	// had to).
	AnsweredScan(messages uint64, err error)
}

// Observation follows one delivery from fetch to acknowledgement.
type Observation interface {
	// Request is called once the message names a request: decoded, or
	// rejected with what could be read of it. eventType is the CloudEvent
	// type as read, "" when unreadable. It returns the context to handle
	// the request in, carrying the request's log attributes and its trace
	// context (the handling span, when the Observer records one). It only
	// reads ref: the outcome event carries the request's own trace context,
	// so observing never changes what is published.
	Request(ctx context.Context, eventType string, ref event.RequestRef) context.Context
	// Outcome is told that this delivery committed the request's outcome:
	// store.OutcomeIssued, or store.OutcomeFailed with its reason. A
	// delivery acknowledged without an Outcome found the request already
	// processed.
	Outcome(outcome, reason string)
	// Dropped is told that the message was terminated without any record
	// (decision.Drop).
	Dropped()
	// Settled is called once the message has been acknowledged,
	// terminated or handed back; disposition is the Action applied ("ack",
	// "term", "retry", "pause", "hand_back"), and err the error of that
	// acknowledgement, if any.
	Settled(disposition string, err error)
}

// observer is the configured Observer, or one that observes nothing (a
// Config built without New, as internal tests do, has none).
func (c Config) observer() Observer {
	if c.Observer == nil {
		return nopObserver{}
	}
	return c.Observer
}

// nopObserver observes nothing, at no cost.
type nopObserver struct{}

func (nopObserver) Delivery(context.Context, uint64) Observation { return nopObserver{} }
func (nopObserver) UserProvisioned(int64)                        {}
func (nopObserver) Paused(string)                                {}
func (nopObserver) AnsweredScan(uint64, error)                   {}
func (nopObserver) Request(ctx context.Context, _ string, _ event.RequestRef) context.Context {
	return ctx
}
func (nopObserver) Outcome(string, string) {}
func (nopObserver) Dropped()               {}
func (nopObserver) Settled(string, error)  {}
