package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/mbanq"
)

// disposition is what happens to a message once handling stops.
type disposition int

const (
	// ack: the outcome is committed (now or by an earlier delivery); the
	// message is acknowledged. Should the ack be lost, the redelivery finds
	// the inbox row and is only acknowledged.
	ack disposition = iota
	// term: a permanent failure is committed; the message is terminated so
	// JetStream never redelivers it.
	term
	// retry: a transient failure; nothing was committed, the message is
	// negatively acknowledged with a delay growing with its deliveries.
	retry
	// retryNow: the token was refused and has been dropped; the next
	// delivery fetches a fresh one, so there is no reason to wait (on the
	// first delivery; later ones back off as retry does).
	retryNow
)

func (d disposition) String() string {
	switch d {
	case ack:
		return "ack"
	case term:
		return "term"
	case retry:
		return "retry"
	case retryNow:
		return "retry_now"
	}
	return "unknown"
}

// failure classes, from whatever went wrong while handling a request.
type failureClass int

const (
	classTransient failureClass = iota // network, 5xx, 429, database, NATS, shutdown
	classReauth                        // token expired or revoked
	classPermanent                     // the request can never succeed as sent
)

// dispositions is the one table from failure class to action. Permanent
// failures are committed as card.failed first (see Consumer.fail), then
// terminated; transient ones are retried until MaxDeliver, after which they
// are committed as retries_exhausted.
var dispositions = map[failureClass]disposition{
	classTransient: retry,
	classReauth:    retryNow,
	classPermanent: term,
}

// classify sorts an error from handling a request. Context cancellation
// (shutdown) is transient: a request interrupted by a stopping process is
// handed back for redelivery, never failed.
func classify(err error) failureClass {
	var de *event.DecodeError
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return classTransient
	case errors.As(err, &de):
		return classPermanent
	}
	var f event.Failure
	if errors.As(err, &f) {
		return classPermanent
	}
	var be *mbanq.Error
	if !errors.As(err, &be) {
		// Not the bank: the database, NATS, or our own plumbing.
		return classTransient
	}
	if be.Code == mbanq.CodeMalformedResponse {
		// The bank said yes in a form we cannot read: the card (or user)
		// may exist. Failing the request would tell the ERP there is no
		// card when there may be one, so it is retried under the same
		// Idempotency-Key, which asks for the same card again; if the
		// answer stays unreadable it ends as retries_exhausted, with a
		// dead letter for a person to look at.
		return classTransient
	}
	switch mbanq.Classify(err) {
	case mbanq.ClassPermanent:
		return classPermanent
	case mbanq.ClassReauth:
		return classReauth
	}
	return classTransient
}

// retryDelay grows with the number of deliveries: 1s, 2s, 4s... capped at
// five minutes, so a bank outage is ridden out without hammering it.
func retryDelay(deliveries uint64) time.Duration {
	if deliveries < 1 {
		deliveries = 1
	}
	d := time.Second << min(deliveries-1, 9)
	return min(d, 5*time.Minute)
}
