package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/store"
)

// Handle processes one message to its end: it commits an outcome and
// acknowledges, or hands the message back for a later delivery.
func (c *Consumer) Handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to acknowledge, nothing to redeliver.
		c.log.Error("message without JetStream metadata", "err", err)
		return
	}
	d := delivery{msg: msg, meta: meta, obs: c.cfg.observer().Delivery(ctx, meta.NumDelivered)}
	defer c.keepAlive(msg)()

	disp, err := c.process(ctx, &d)
	switch disp {
	case ack:
		// The outcome is committed. A plain Ack, not DoubleAck: an ack that
		// is lost only brings the message back after AckWait, and that
		// delivery finds the inbox row and is acknowledged without doing
		// anything. Waiting for the server's confirmation would cost a
		// round trip per request and protect nothing.
		err = msg.Ack()
	case term:
		err = msg.Term()
	case retry:
		if ctx.Err() != nil {
			// Cut short by shutdown: hand it back for another process at once.
			err = msg.Nak()
			break
		}
		delay := retryDelay(meta.NumDelivered)
		if ra := mbanq.RetryAfter(err); ra > delay {
			delay = ra // the bank asked for a longer pause
		}
		err = msg.NakWithDelay(delay)
	case retryNow:
		if meta.NumDelivered > 1 {
			// Refused again with fresh credentials: the password itself is
			// wrong, or the bank is failing logins. Back off like any
			// transient failure rather than burning the deliveries at once.
			err = msg.NakWithDelay(retryDelay(meta.NumDelivered))
			break
		}
		err = msg.Nak()
	}
	if err != nil {
		// The outcome (if any) is committed; a redelivery will find it in
		// the inbox and only acknowledge.
		c.log.Warn("acknowledging message", append(d.logAttrs(), "disposition", disp.String(), "err", err)...)
	}
	d.obs.Settled(disp.String(), err)
}

// delivery is one delivery of a message and what is learnt of it on the way.
type delivery struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	req  *event.Request
	ref  event.RequestRef
	obs  Observation
}

func (d *delivery) logAttrs() []any {
	attrs := []any{"stream_seq", d.meta.Sequence.Stream, "deliveries", d.meta.NumDelivered}
	if d.ref.ID != "" {
		attrs = append(attrs, "request_source", d.ref.Source, "request_id", d.ref.ID, "employee_id", d.ref.EmployeeID)
	}
	return attrs
}

// process decides the fate of one delivery, committing the outcome when
// there is one.
func (c *Consumer) process(ctx context.Context, d *delivery) (disposition, error) {
	req, err := event.Decode(d.msg.Headers(), d.msg.Data())
	if err != nil {
		var de *event.DecodeError
		if errors.As(err, &de) {
			d.ref = de.Ref()
			ctx, d.ref = d.obs.Request(ctx, de.Type, d.ref)
		}
		return c.fail(ctx, d, err)
	}
	d.req, d.ref = req, req.Ref()
	ctx, d.ref = d.obs.Request(ctx, req.Type, d.ref)

	hash := payloadHash(req)
	// One batched query answers both the inbox and the binding.
	adm, err := c.store.Admit(ctx, store.AdmissionQuery{Source: req.Source, RequestID: req.ID, ClientID: req.Data.ClientID})
	if err != nil {
		return c.transient(ctx, d, err)
	}
	if prev := adm.Processed; prev != nil {
		if string(prev.PayloadHash) != string(hash) {
			// The first request stands and keeps its one outcome; the
			// conflicting one is kept as a dead letter for a person to see.
			c.log.Warn("duplicate request id with a different payload; the first request stands",
				append(d.logAttrs(), "reason", event.ReasonDuplicateConflict, "first_outcome", prev.Outcome)...)
			dl := d.deadLetter(event.Failure{Reason: event.ReasonDuplicateConflict,
				Message: "a request with this source and id but different data was already " + prev.Outcome})
			if err := c.store.AddDeadLetter(ctx, *dl); err != nil {
				return c.transient(ctx, d, err)
			}
		} else {
			c.log.Debug("duplicate delivery of a processed request", append(d.logAttrs(), "outcome", prev.Outcome)...)
		}
		return ack, nil
	}

	card, err := c.order(ctx, req, adm)
	if err != nil {
		return c.fail(ctx, d, err)
	}
	issued, err := c.issuedCompletion(d, hash, card)
	if err != nil {
		return c.transient(ctx, d, err)
	}
	inserted, err := c.complete(ctx, issued)
	if err != nil {
		return c.transient(ctx, d, err)
	}
	if inserted {
		d.obs.Outcome(store.OutcomeIssued, "")
		c.log.Info("card issued", append(d.logAttrs(), "client_id", req.Data.ClientID, "card_id", card.CardID)...)
	}
	return ack, nil
}

// order checks the binding and orders the card at MBanq, holding one of
// the MaxInFlight bank slots while it does.
func (c *Consumer) order(ctx context.Context, req *event.Request, adm store.Admission) (*store.CardOrder, error) {
	b := adm.Binding
	if b == nil {
		msg := fmt.Sprintf("source %q is not bound to any client", req.Source)
		if adm.SourceKnown {
			msg = fmt.Sprintf("source %q is not bound to client %d", req.Source, req.Data.ClientID)
		}
		return nil, event.Failure{Reason: event.ReasonUnboundSource, Message: msg}
	}
	select {
	case c.bankSlots <- struct{}{}:
		defer func() { <-c.bankSlots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	sess, err := c.users.session(ctx, req.Data.ClientID)
	if err != nil {
		return nil, fmt.Errorf("self-service user of client %d: %w", req.Data.ClientID, err)
	}
	key := IdempotencyKey(req.Source, req.ID)
	card, err := sess.OrderCard(ctx, mbanq.OrderCardRequest{
		ProductID:        b.CardProductID,
		SavingsAccountID: b.SavingsAccountID,
		ClientID:         req.Data.ClientID,
	}, key)
	if err != nil {
		if mbanq.Classify(err) == mbanq.ClassReauth {
			c.users.forget(req.Data.ClientID)
		}
		return nil, fmt.Errorf("ordering card: %w", err)
	}
	status := card.Status
	if status == "" {
		// MBanq answers an order with ids only; a successful order is an
		// active card (see docs/mbanq-api.md).
		status = "ACTIVE"
	}
	return &store.CardOrder{
		ClientID:         req.Data.ClientID,
		EmployeeID:       req.Subject,
		SavingsAccountID: b.SavingsAccountID,
		CardProductID:    b.CardProductID,
		IdempotencyKey:   key,
		CardID:           card.ID,
		CardToken:        card.CardToken,
		Status:           status,
		IssuedAt:         time.Now().UTC(),
	}, nil
}

// fail settles an error: a permanent one (or a transient one on the last
// delivery) is committed as card.failed; any other is retried.
func (c *Consumer) fail(ctx context.Context, d *delivery, cause error) (disposition, error) {
	class := classify(cause)
	if class != classPermanent {
		if d.meta.NumDelivered < uint64(c.cfg.MaxDeliver) || ctx.Err() != nil {
			return c.retryLater(d, class, cause)
		}
		cause = event.Failure{Reason: event.ReasonRetriesExhausted,
			Message: fmt.Sprintf("gave up after %d deliveries: %s", d.meta.NumDelivered, safeMessage(cause))}
	}
	f := failureOf(cause)
	comp, err := c.failedCompletion(d, f)
	if err == nil {
		_, err = c.complete(ctx, comp)
	}
	if err != nil {
		// Not even the failure could be recorded. JetStream's own delivery
		// limit is off (see broker.Ensure), so the message comes back and
		// the next delivery tries again.
		return c.retryLater(d, classTransient, err)
	}
	d.obs.Outcome(store.OutcomeFailed, f.Reason)
	c.log.Warn("request failed", append(d.logAttrs(), "reason", f.Reason, "message", f.Message, "bank_code", f.BankErrorCode)...)
	return dispositions[classPermanent], nil
}

// complete commits an outcome and, when this delivery is the one that
// recorded it, publishes its event.
func (c *Consumer) complete(ctx context.Context, comp store.Completion) (bool, error) {
	inserted, err := c.store.Complete(ctx, comp)
	if err == nil && inserted && comp.Event.EventID != "" && c.cfg.Outcomes != nil {
		c.cfg.Outcomes.Committed(ctx, comp.Event)
	}
	return inserted, err
}

// transient hands the message back after an infrastructure error (the
// database, NATS) that is no fault of the request.
func (c *Consumer) transient(ctx context.Context, d *delivery, err error) (disposition, error) {
	if d.meta.NumDelivered >= uint64(c.cfg.MaxDeliver) && ctx.Err() == nil {
		return c.fail(ctx, d, err)
	}
	return c.retryLater(d, classTransient, err)
}

func (c *Consumer) retryLater(d *delivery, class failureClass, cause error) (disposition, error) {
	disp := dispositions[class]
	c.log.Warn("request will be retried", append(d.logAttrs(), "disposition", disp.String(), "err", cause)...)
	return disp, cause
}

// failureOf turns a permanent error into what card.failed reports.
func failureOf(err error) event.Failure {
	var f event.Failure
	if errors.As(err, &f) {
		return f
	}
	var de *event.DecodeError
	if errors.As(err, &de) {
		return de.Failure()
	}
	f = event.Failure{Reason: event.ReasonBankRejected, Message: safeMessage(err)}
	var be *mbanq.Error
	if errors.As(err, &be) {
		f.BankErrorCode = be.Code
	}
	return f
}

// safeMessage is an error's text for a card.failed. Errors in cardbridge
// never carry secrets (package secret redacts them by type), so the text
// can be published as it is.
func safeMessage(err error) string {
	s := err.Error()
	if len(s) > 500 {
		s = s[:500]
	}
	return s
}

// keepAlive tells JetStream the message is still being worked on while a
// slow bank call runs, so AckWait does not expire and a second consumer
// does not start the same request. It returns the function that stops it.
func (c *Consumer) keepAlive(msg jetstream.Msg) func() {
	every := c.cfg.AckWait / 3
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		_ = msg.InProgress()
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(every)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// IdempotencyKey is the Idempotency-Key of the card order of (source, id):
// fixed for the request, so every retry and every redelivery asks MBanq
// for the same card and a lost response never makes a second one.
func IdempotencyKey(source, id string) string {
	return mbanq.IdempotencyKey("cardbridge", "card-order", source, id)
}

func payloadHash(req *event.Request) []byte {
	b, _ := json.Marshal(req.Data) // a decoded RequestData always marshals
	h := sha256.Sum256(b)
	return h[:]
}
