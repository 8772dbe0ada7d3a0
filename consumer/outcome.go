package consumer

import (
	"fmt"
	"time"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/store"
)

// issuedCompletion is what is committed for a card MBanq issued.
func (c *Consumer) issuedCompletion(d *delivery, hash []byte, card *store.CardOrder) (store.Completion, error) {
	req := d.req
	out := event.NewIssued(c.cfg.Source, d.ref, event.Card{
		ID:        card.CardID,
		Token:     card.CardToken,
		ProductID: card.CardProductID,
		Status:    card.Status,
		IssuedAt:  card.IssuedAt,
	})
	ev, err := outboxEvent(out)
	if err != nil {
		// The bank's answer does not make a valid card.issued: what it
		// said cannot be published as it is. Asked again under the same
		// Idempotency-Key, it may answer in full.
		return store.Completion{}, &mbanq.Error{Op: "order card", HTTPStatus: 200, Code: mbanq.CodeMalformedResponse,
			Message: "the card does not make a valid card.issued", Err: err}
	}
	return store.Completion{
		Source:      req.Source,
		RequestID:   req.ID,
		PayloadHash: hash,
		Outcome:     store.OutcomeIssued,
		Card:        card,
		Event:       ev,
		HadRetries:  d.hadRetries || d.adm.Retries != nil,
	}, nil
}

// failedCompletion is what is committed for a request that failed: the
// inbox row, the card.failed event (when the message named a request to
// answer) and the dead letter keeping the original message.
func (c *Consumer) failedCompletion(d *delivery, f event.Failure) (store.Completion, error) {
	comp := store.Completion{
		Source:     d.ref.Source,
		RequestID:  d.ref.ID,
		Outcome:    store.OutcomeFailed,
		Reason:     f.Reason,
		HadRetries: d.hadRetries || d.adm.Retries != nil,
	}
	if d.req != nil {
		comp.PayloadHash = payloadHash(d.req)
	} else {
		comp.PayloadHash = []byte{}
	}
	if d.ref.ID != "" && d.ref.Source != "" && !d.forged {
		ev, err := outboxEvent(event.NewFailed(c.cfg.Source, d.ref, f, time.Now()))
		if err != nil {
			// What the message said of itself does not fit card.failed
			// (an odd employee id, say): answer with what is certain.
			// The same goes for what the bank said (its code): the reason
			// alone is always a valid answer. Failing here would leave the
			// request retrying for ever, ordering again at each delivery.
			ref := event.RequestRef{Source: d.ref.Source, ID: d.ref.ID, Generation: d.ref.Generation}
			bare := event.Failure{Reason: f.Reason, Message: f.Message}
			if ev, err = outboxEvent(event.NewFailed(c.cfg.Source, ref, bare, time.Now())); err != nil {
				return store.Completion{}, err
			}
		}
		comp.Event = ev
	} else {
		// Nothing names a request, or the message may not speak for the
		// one it names: key the inbox row by the message's place in the
		// stream, so its redeliveries are recognised and the request's own
		// id stays free for its real source, and publish nothing, since
		// there is no one to answer.
		// The time the server stored the message is part of the key: it is
		// the same on every delivery of the message, and tells it from the
		// message at the same place in a stream recreated since (sequences
		// start again at 1), which must leave a record of its own.
		comp.Source = ""
		comp.RequestID = fmt.Sprintf("%s/%d@%s", d.meta.Stream, d.meta.Sequence.Stream,
			d.meta.Timestamp.UTC().Format(time.RFC3339Nano))
	}
	comp.DeadLetter = d.deadLetter(f)
	return comp, nil
}

// deadLetter keeps the delivery's original message and why it failed. A
// body larger than event.MaxEventSize (refused unread) is kept cut to that
// size: enough to see what it was, not enough to fill the table.
func (d *delivery) deadLetter(f event.Failure) *store.DeadLetter {
	data := d.msg.Data()
	if len(data) > event.MaxEventSize {
		data = data[:event.MaxEventSize]
		f.Message += fmt.Sprintf(" (the body, %d bytes, is kept cut to %d)", len(d.msg.Data()), event.MaxEventSize)
	}
	return &store.DeadLetter{
		Source:     d.ref.Source,
		RequestID:  d.ref.ID,
		Reason:     f.Reason,
		Message:    f.Message,
		BankCode:   f.BankErrorCode,
		Subject:    d.msg.Subject(),
		Header:     d.msg.Headers(),
		Data:       data,
		StreamSeq:  d.meta.Sequence.Stream,
		Deliveries: d.meta.NumDelivered,
		FirstSeen:  d.meta.Timestamp,
	}
}

// ReplayHeader carries the replay generation on a request republished by
// `cardbridge replay`, for people reading the stream. A request's
// generation is the store's (store.Admission), never the header's; the
// consumer reads the header only to tell when a request without an inbox
// row first appeared (answered.go): a replay of the current generation
// when it was republished, not at its original CloudEvent time. A
// publisher that writes it can only shorten the look for its own
// request's earlier outcome.
const ReplayHeader = "Cardbridge-Replay"

// outboxEvent encodes an outcome for the outbox, after checking it against
// its schema: what is committed is published as it is, so an invalid event
// must never get that far.
func outboxEvent(o event.Outcome) (store.OutboxEvent, error) {
	m, err := o.Encode()
	if err != nil {
		return store.OutboxEvent{}, fmt.Errorf("encoding %s: %w", o.Type, err)
	}
	if err := event.ValidateData(o.Type, m.Data); err != nil {
		return store.OutboxEvent{}, fmt.Errorf("checking %s: %w", o.Type, err)
	}
	return store.OutboxEvent{EventID: o.ID, Message: m}, nil
}
