package consumer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/store"
)

// Handle processes one message to its end. It owns the message: the
// handling (process) returns a decision.Decision, and Handle applies it.
func (c *Consumer) Handle(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to acknowledge, nothing to redeliver.
		c.log.Error("message without JetStream metadata", "err", err)
		return
	}
	d := &delivery{msg: msg, meta: meta, obs: c.cfg.observer().Delivery(ctx, meta.NumDelivered)}
	defer c.keepAlive(msg)()

	dec := c.process(ctx, d)
	for dec.Action == decision.Hold {
		// The card exists but its outcome is not committed: keep the
		// message (keepAlive sends InProgress) and try the commit again.
		t := time.NewTimer(dec.Delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		d.holds++
		dec = c.commitIssued(ctx, d)
	}

	switch dec.Action {
	case decision.Ack:
		// A plain Ack, not DoubleAck: an ack that is lost only brings the
		// message back after AckWait, and that delivery finds the inbox
		// row and is acknowledged without doing anything.
		err = msg.Ack()
	case decision.Term:
		err = msg.Term()
	case decision.Retry, decision.Pause:
		if ctx.Err() != nil {
			// Cut short by shutdown: hand it back for another process at once.
			err = msg.Nak()
			break
		}
		err = msg.NakWithDelay(dec.Delay)
	case decision.Drop:
		c.log.Error("message terminated without a record: Postgres refuses what it carries",
			append(d.logAttrs(), "subject", d.msg.Subject(), "size", len(d.msg.Data()), "headers", headerNames(d.msg.Headers()))...)
		d.obs.Dropped()
		err = msg.Term()
	default: // HandBack
		err = msg.Nak()
	}
	if err != nil {
		// The outcome (if any) is committed; a redelivery will find it in
		// the inbox and only acknowledge.
		c.log.Warn("acknowledging message", append(d.logAttrs(), "decision", dec.String(), "err", err)...)
	}
	d.obs.Settled(dec.Action.String(), err)
}

// delivery is one delivery of a message and what is learnt of it on the way.
type delivery struct {
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	req  *event.Request
	// ref names the request as its outcome answers it, with the trace
	// context the outcome carries: the request's, as it came.
	ref event.RequestRef
	obs Observation
	// adm is what the store knew of the request when it was admitted.
	adm store.Admission
	// bankTime is how long this delivery spent at the bank.
	bankTime time.Duration
	// issued is the outcome of a card ordered in this delivery, kept
	// until it is committed.
	issued *store.Completion
	holds  int
	// hadRetries: the request may have a record of failed tries at the
	// bank, which the commit of its card deletes.
	hadRetries bool
	// ordering is set once the card order's call began: cut short, it may
	// have reached the bank.
	ordering bool
	// forged is set when the message names a source it may not speak for:
	// its failure is recorded under its place in the stream, not under the
	// request it names, and no one is answered.
	forged bool
}

func (d *delivery) logAttrs() []any {
	attrs := []any{"stream_seq", d.meta.Sequence.Stream, "deliveries", d.meta.NumDelivered}
	if d.ref.ID != "" {
		attrs = append(attrs, "request_source", d.ref.Source, "request_id", d.ref.ID, "employee_id", d.ref.EmployeeID)
	}
	return attrs
}

// process handles one delivery and decides its fate, committing the
// outcome when there is one.
func (c *Consumer) process(ctx context.Context, d *delivery) decision.Decision {
	req, err := event.Decode(d.msg.Headers(), d.msg.Data())
	if err != nil {
		var de *event.DecodeError
		if errors.As(err, &de) {
			d.ref = de.Ref()
			ctx = d.obs.Request(ctx, de.Type, d.ref)
		}
		if d.ref.ID != "" && d.ref.Source != "" {
			// It names a request: learn whether that request has its
			// outcome already, and its generation.
			if dec, done := c.admit(ctx, d, nil); done {
				return dec
			}
		}
		return c.settle(ctx, d, err)
	}
	d.req, d.ref = req, req.Ref()
	ctx = d.obs.Request(ctx, req.Type, d.ref)

	hash := payloadHash(req)
	if dec, done := c.admit(ctx, d, hash); done {
		return dec
	}
	if d.adm.Retries == nil {
		// A request that already reached the bank is never expired: it
		// goes on under its key, and the key's own limit applies below.
		if err := c.expired(req, d.meta.Timestamp); err != nil {
			return c.settle(ctx, d, err)
		}
	}
	if dec, done := c.answeredBefore(ctx, d, hash); done {
		return dec
	}
	if r := d.adm.Retries; r != nil && r.Unknown && c.policy.KeyExpired(r.UnknownFor) {
		// Checked before the order is sent, not only after a try fails:
		// a delivery that comes late (after a crash, a pause, a backlog)
		// must not reach a bank that has forgotten the key.
		return c.settle(ctx, d, decision.ErrKeyForgotten)
	}
	card, err := c.order(ctx, d)
	if err != nil {
		return c.settle(ctx, d, err)
	}
	issued, err := c.issuedCompletion(d, hash, card)
	if err != nil {
		return c.settle(ctx, d, err)
	}
	d.issued = &issued
	return c.commitIssued(ctx, d)
}

// admit asks the store what it knows of the delivery's request. done is
// true when that settles the delivery: the request has its outcome
// already, or the store could not be asked.
func (c *Consumer) admit(ctx context.Context, d *delivery, hash []byte) (dec decision.Decision, done bool) {
	adm, err := c.store.Admit(ctx, store.AdmissionQuery{Source: d.ref.Source, RequestID: d.ref.ID, ClientID: d.ref.ClientID})
	if err != nil {
		return c.settle(ctx, d, err), true
	}
	d.adm = adm
	d.ref.Generation = adm.Generation // the outcome answers this generation
	if err := c.authenticate(d); err != nil {
		d.forged = true
		c.log.Warn("request refused: its source speaks only through another NATS identity", append(d.logAttrs(), "subject", d.msg.Subject())...)
		return c.settle(ctx, d, err), true
	}
	prev := adm.Processed
	if prev == nil {
		return decision.Decision{}, false
	}
	if hash == nil {
		hash = []byte{} // what an unreadable request's inbox row holds
	}
	if !bytes.Equal(prev.PayloadHash, hash) {
		// The first request stands and keeps its one outcome; the
		// conflicting message is kept as a dead letter of its own for a
		// person to see.
		c.log.Warn("duplicate request id with a different payload; the first request stands",
			append(d.logAttrs(), "reason", event.ReasonDuplicateConflict, "first_outcome", prev.Outcome)...)
		dl := d.deadLetter(event.Failure{Reason: event.ReasonDuplicateConflict,
			Message: "a request with this source and id but different data was already " + prev.Outcome})
		if err := c.store.AddConflict(ctx, *dl); err != nil {
			return c.settle(ctx, d, err), true
		}
	} else {
		c.log.Debug("duplicate delivery of a processed request", append(d.logAttrs(), "outcome", prev.Outcome)...)
	}
	return decision.Decision{Action: decision.Ack}, true
}

// authenticate refuses a message whose source it may not speak for. A
// source bound to a publisher (a NATS identity) is accepted only on that
// publisher's subject, which the NATS server lets only that ERP publish
// on; and a message on an ERP's own subject may name only a source bound
// to that ERP. No header or field can make one ERP speak for another.
// Messages stored before the publisher was set (by the server's clock) are
// taken as they were sent, under the trust of then.
func (c *Consumer) authenticate(d *delivery) error {
	want := d.adm.SourcePublisher
	got, onOwn := strings.CutPrefix(d.msg.Subject(), c.cfg.RequestSubject+".")
	switch {
	case onOwn && got == want:
		return nil
	case !onOwn && want == "":
		return nil // the contract's subject, a source of a NATS closed to all but trusted ERPs
	case !onOwn && d.adm.SourcePublisherSince.After(d.meta.Timestamp):
		return nil // queued before the source was bound to its publisher
	}
	if want == "" {
		return event.Failure{Reason: event.ReasonUnboundSource, Message: fmt.Sprintf(
			"source %q is not bound to publisher %q, the NATS identity of subject %s", d.ref.Source, got, d.msg.Subject())}
	}
	return event.Failure{Reason: event.ReasonUnboundSource, Message: fmt.Sprintf(
		"source %q is accepted only on %s.%s, from its own NATS identity; this message came on %s",
		d.ref.Source, c.cfg.RequestSubject, want, d.msg.Subject())}
}

// maxFutureSkew is how far ahead of now a request's time may be (clocks
// differ).
const maxFutureSkew = time.Hour

// expired refuses a request too old for the store to remember whether it
// was answered (see store.Purge for the invariant). Its age is that of its
// CloudEvent time, or of this copy's place in the stream (stored, by the
// NATS server's clock) when that is older or the request has no time: a
// message that has been in the stream longer than the records are kept may
// have been answered already (a stream created by an earlier version keeps
// every message, and a recreated consumer delivers them all again).
func (c *Consumer) expired(req *event.Request, stored time.Time) error {
	if c.cfg.Retention <= 0 {
		return nil
	}
	if !req.Time.IsZero() && req.Time.After(time.Now().Add(maxFutureSkew)) {
		// A time ahead of now would never expire, and its request could
		// be ordered again once its records are purged.
		return event.Failure{Reason: event.ReasonInvalidEvent, Message: fmt.Sprintf(
			"the request's time (%s) is more than %s in the future", req.Time.UTC().Format(time.RFC3339), maxFutureSkew)}
	}
	limit := c.cfg.Retention - 24*time.Hour
	if !req.Time.IsZero() && time.Since(req.Time) > limit {
		return event.Failure{Reason: event.ReasonRequestExpired, Message: fmt.Sprintf(
			"the request's time (%s) is older than cardbridge keeps its records (%s less a day): send a new request",
			req.Time.UTC().Format(time.RFC3339), c.cfg.Retention)}
	}
	if !stored.IsZero() && time.Since(stored) > limit {
		return event.Failure{Reason: event.ReasonRequestExpired, Message: fmt.Sprintf(
			"the request has been in the stream since %s, longer than cardbridge keeps its records (%s less a day): send a new request",
			stored.UTC().Format(time.RFC3339), c.cfg.Retention)}
	}
	return nil
}

// order checks the binding and orders the card at MBanq, holding one of
// the MaxInFlight bank slots while it does.
func (c *Consumer) order(ctx context.Context, d *delivery) (*store.CardOrder, error) {
	req, b := d.req, d.adm.Binding
	if b == nil {
		msg := fmt.Sprintf("source %q is not bound to any client", req.Source)
		if d.adm.SourceKnown {
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
	if c.gate.paused() {
		return nil, decision.ErrPaused
	}
	start := time.Now()
	defer func() { d.bankTime = time.Since(start) }()
	sess, err := c.users.session(ctx, req.Data.ClientID)
	if err != nil {
		return nil, fmt.Errorf("self-service user of client %d: %w", req.Data.ClientID, err)
	}
	key := IdempotencyKey(req.Source, req.ID, d.adm.OrderKeyGeneration)
	d.ordering = true
	card, err := sess.OrderCard(ctx, mbanq.OrderCardRequest{
		ProductID:        b.CardProductID,
		SavingsAccountID: b.SavingsAccountID,
		ClientID:         req.Data.ClientID,
	}, key)
	if err != nil {
		if mbanq.Classify(err) == mbanq.ClassReauth {
			c.users.forget(req.Data.ClientID)
		}
		return nil, decision.OrderCall{Err: fmt.Errorf("ordering card: %w", err)}
	}
	return &store.CardOrder{
		ClientID:         req.Data.ClientID,
		EmployeeID:       req.Subject,
		SavingsAccountID: b.SavingsAccountID,
		CardProductID:    b.CardProductID,
		IdempotencyKey:   key,
		CardID:           card.ID,
		CardToken:        card.CardToken,
		Status:           card.Status,
		IssuedAt:         time.Now().UTC(),
	}, nil
}

// commitIssued commits the card ordered in this delivery.
func (c *Consumer) commitIssued(ctx context.Context, d *delivery) decision.Decision {
	inserted, err := c.complete(ctx, *d.issued)
	if err != nil {
		if ctx.Err() != nil {
			// Shutting down: the next delivery asks the bank again under
			// the same Idempotency-Key and gets this card.
			return c.decide(d, decision.Facts{Fault: decision.FaultShutdown}, err)
		}
		return c.decide(d, decision.Facts{Fault: decision.FaultUnrecorded, Holds: d.holds}, err)
	}
	if inserted {
		d.obs.Outcome(store.OutcomeIssued, "")
		c.log.Info("card issued", append(d.logAttrs(), "client_id", d.req.Data.ClientID, "card_id", d.issued.Card.CardID)...)
	}
	return decision.Decision{Action: decision.Ack}
}

// settle decides the fate of a delivery that went wrong, and commits the
// failure when the decision is to give up.
func (c *Consumer) settle(ctx context.Context, d *delivery, cause error) decision.Decision {
	f := decision.Facts{Fault: decision.FaultOf(cause), Deliveries: d.meta.NumDelivered, RetryAfter: mbanq.RetryAfter(cause)}
	// The card order may have been acted on without our hearing: a lost or
	// unreadable answer, or a call cut short by shutdown.
	unknown := errors.As(cause, new(decision.OrderCall)) &&
		(mbanq.OutcomeUnknown(cause) || (f.Fault == decision.FaultShutdown && d.ordering))
	switch {
	case f.Fault == decision.FaultRequest:
		f.Reason = failure("", cause, f).Reason
	case f.Fault == decision.FaultBank, f.Fault == decision.FaultBankUnknown, f.Fault == decision.FaultReauth,
		unknown && (f.Fault == decision.FaultShutdown || f.Fault == decision.FaultDeployment):
		// This delivery reached the bank: it spends the retry budget, and
		// an unknown outcome is remembered for every later delivery.
		rctx := ctx
		if f.Fault == decision.FaultShutdown {
			var cancel context.CancelFunc
			rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
		}
		r, err := c.store.RecordBankFailure(rctx, store.BankFailure{
			Source: d.ref.Source, RequestID: d.ref.ID, Took: d.bankTime,
			Unknown: unknown || f.Fault == decision.FaultBankUnknown, Error: safeMessage(cause),
		}, c.maxGap())
		if err != nil {
			if f.Fault != decision.FaultShutdown {
				return c.decide(d, decision.Facts{Fault: decision.FaultOf(err), Deliveries: f.Deliveries}, fmt.Errorf("%w (after: %v)", err, cause))
			}
			c.log.Error("recording that an order cut short by shutdown may have reached the bank", append(d.logAttrs(), "err", err)...)
		}
		d.hadRetries = true
		f.Spent, f.Unknown, f.UnknownFor = r.Spent, r.Unknown, r.UnknownFor
	case f.Fault == decision.FaultRejected:
		// A refusal proves no card exists only if no earlier try's answer
		// is unknown: in this call, or in any earlier delivery or replay
		// (the record, read at admission).
		f.Unknown = unknown
		if r := d.adm.Retries; r != nil {
			f.Unknown, f.Spent = f.Unknown || r.Unknown, r.Spent
		}
	}
	dec := c.decide(d, f, cause)
	switch dec.Action {
	case decision.Term:
		if err := c.recordFailure(ctx, d, failure(dec.Fail, cause, f)); err != nil {
			// Not even the failure could be recorded: the message comes
			// back and the next delivery tries again.
			return c.decide(d, decision.Facts{Fault: decision.FaultOf(err), Deliveries: f.Deliveries}, err)
		}
	case decision.Pause:
		if !errors.Is(cause, decision.ErrPaused) {
			code, message := decision.DeploymentFault(cause)
			c.pause(code, message, d.ref.ClientID)
		}
	}
	return dec
}

// decide applies the Policy to a delivery's facts and logs a decision to
// try again.
func (c *Consumer) decide(d *delivery, f decision.Facts, cause error) decision.Decision {
	dec := c.policy.Decide(f)
	switch dec.Action {
	case decision.Retry, decision.Hold:
		c.log.Warn("request will be retried", append(d.logAttrs(), "fault", f.Fault.String(), "decision", dec.String(), "err", cause)...)
	case decision.HandBack, decision.Pause:
		c.log.Debug("request handed back", append(d.logAttrs(), "fault", f.Fault.String(), "decision", dec.String(), "err", cause)...)
	}
	return dec
}

// recordFailure commits a failed outcome: inbox, card.failed and dead
// letter.
func (c *Consumer) recordFailure(ctx context.Context, d *delivery, f event.Failure) error {
	comp, err := c.failedCompletion(d, f)
	if err != nil {
		return err
	}
	if _, err := c.complete(ctx, comp); err != nil {
		return err
	}
	d.obs.Outcome(store.OutcomeFailed, f.Reason)
	c.log.Warn("request failed", append(d.logAttrs(), "reason", f.Reason, "message", f.Message, "bank_code", f.BankErrorCode)...)
	return nil
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

// maxGap is how much of the wait between two failed tries at the bank
// counts as time spent trying: the longest retry delay, and the time a
// delivery may take, with room to spare. Longer waits (a paused process,
// a backlog) are not the bank's.
func (c *Consumer) maxGap() time.Duration {
	return 2 * (c.policy.LongestDelay() + c.cfg.AckWait)
}

// keepAlive tells JetStream the message is still being worked on, every
// third of AckWait for as long as Handle holds it (waiting for a bank slot,
// at the bank, holding a card whose commit failed), so AckWait does not
// expire and another process does not start the same request. A message is
// handed to Handle as it arrives (see puller), so it is kept alive from its
// delivery until it is settled, and no longer. It returns the function that
// stops it.
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

// IdempotencyKey is the Idempotency-Key of the card order of (source, id)
// in key generation gen: fixed for the request, so every retry and every
// redelivery asks MBanq for the same card and a lost response never makes
// a second one. The generation moves on only when a replay follows a
// definite refusal (see store.Replay); generation 0 is the key of every
// request never refused.
func IdempotencyKey(source, id string, gen int) string {
	if gen == 0 {
		return mbanq.IdempotencyKey("cardbridge", "card-order", source, id)
	}
	return mbanq.IdempotencyKey("cardbridge", "card-order", source, id, "generation", strconv.Itoa(gen))
}

func payloadHash(req *event.Request) []byte {
	b, _ := json.Marshal(req.Data) // a decoded RequestData always marshals
	h := sha256.Sum256(b)
	return h[:]
}

// headerNames lists a message's header names, sorted, for a log line that
// must not repeat values (they may carry personal data).
func headerNames(h map[string][]string) []string {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
