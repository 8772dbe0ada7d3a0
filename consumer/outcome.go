package consumer

import (
	"fmt"
	"time"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/store"
)

// issuedCompletion is what is committed for a card MBanq issued.
func (c *Consumer) issuedCompletion(req *event.Request, hash []byte, card *store.CardOrder) (store.Completion, error) {
	out := event.NewIssued(c.cfg.Source, req.Ref(), event.Card{
		ID:        card.CardID,
		Token:     card.CardToken,
		ProductID: card.CardProductID,
		Status:    card.Status,
		IssuedAt:  card.IssuedAt,
	})
	ev, err := outboxEvent(out)
	if err != nil {
		return store.Completion{}, err
	}
	return store.Completion{
		Source:      req.Source,
		RequestID:   req.ID,
		PayloadHash: hash,
		Outcome:     store.OutcomeIssued,
		Card:        card,
		Event:       ev,
	}, nil
}

// failedCompletion is what is committed for a request that failed: the
// inbox row, the card.failed event (when the message named a request to
// answer) and the dead letter keeping the original message.
func (c *Consumer) failedCompletion(d *delivery, f event.Failure) (store.Completion, error) {
	comp := store.Completion{
		Source:    d.ref.Source,
		RequestID: d.ref.ID,
		Outcome:   store.OutcomeFailed,
		Reason:    f.Reason,
	}
	if d.req != nil {
		comp.PayloadHash = payloadHash(d.req)
	} else {
		comp.PayloadHash = []byte{}
	}
	if d.ref.ID != "" && d.ref.Source != "" {
		ev, err := outboxEvent(event.NewFailed(c.cfg.Source, d.ref, f, time.Now()))
		if err != nil {
			return store.Completion{}, err
		}
		comp.Event = ev
	} else {
		// Nothing names a request: key the inbox row by the message's place
		// in the stream, so its redeliveries are recognised, and publish
		// nothing, since there is no one to answer.
		comp.Source = ""
		comp.RequestID = fmt.Sprintf("%s/%d", d.meta.Stream, d.meta.Sequence.Stream)
	}
	comp.DeadLetter = &store.DeadLetter{
		Message:    f.Message,
		BankCode:   f.BankErrorCode,
		Subject:    d.msg.Subject(),
		Header:     d.msg.Headers(),
		Data:       d.msg.Data(),
		StreamSeq:  d.meta.Sequence.Stream,
		Deliveries: d.meta.NumDelivered,
		FirstSeen:  d.meta.Timestamp,
	}
	return comp, nil
}

func outboxEvent(o event.Outcome) (store.OutboxEvent, error) {
	m, err := o.Encode()
	if err != nil {
		return store.OutboxEvent{}, fmt.Errorf("encoding %s: %w", o.Type, err)
	}
	return store.OutboxEvent{EventID: o.ID, Subject: m.Subject, Header: m.Header, Data: m.Data}, nil
}
