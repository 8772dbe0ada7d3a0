package consumer

// Replay re-drives dead-lettered requests: it releases a dead
// letter's request in the store (store.Replay) and republishes the
// original message, so the request is handled again under its original
// CloudEvent id. The console's replay button and the `cardbridge replay`
// command both use it, so the two cannot drift apart.
//
// A replay is safe to repeat. A request that has a card is refused
// (store.ErrAlreadyIssued), never ordered twice; and when the republish
// fails after the store released the request, the dead letter stays listed
// as pending, and replaying it again (by id) finishes the job. Which
// Idempotency-Key the card order uses is the store's decision (see
// store.Replay).

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/store"
)

// ReplayStore is what a replay needs of the store; *store.Store implements it.
type ReplayStore interface {
	Replay(ctx context.Context, id int64) (store.DeadLetter, error)
	DeadLetters(ctx context.Context, f store.DeadLetterFilter) ([]store.DeadLetter, error)
}

// ReplayPublisher is what a replay needs of JetStream; jetstream.JetStream
// implements it.
type ReplayPublisher interface {
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Replay replays dead letter id: it releases the request in the store, then
// republishes the original message (subject, headers, body) with the
// Cardbridge-Replay header set to the new replay generation, and waits for
// JetStream to store it. It returns the dead letter as released, with
// ReplayCount already counting this replay.
func Replay(ctx context.Context, st ReplayStore, js ReplayPublisher, id int64) (store.DeadLetter, error) {
	d, err := st.Replay(ctx, id)
	if err != nil {
		return store.DeadLetter{}, err
	}
	ack, err := js.PublishMsg(ctx, ReplayMessage(d))
	if err != nil {
		return d, fmt.Errorf("replaying dead letter %d: republishing to %s: %w (replay it again to retry)", id, d.Subject, err)
	}
	if ack != nil && ack.Duplicate {
		// Another message in the stream's duplicate window carries this
		// Nats-Msg-Id: JetStream did not store the replay.
		return d, fmt.Errorf("replaying dead letter %d: republishing to %s: JetStream took it for a duplicate and did not store it (replay it again to retry)", id, d.Subject)
	}
	return d, nil
}

// ReplayResult is what became of one dead letter in ReplayMatching.
type ReplayResult struct {
	DeadLetter store.DeadLetter
	// Err is nil when the request was republished; store.ErrAlreadyIssued
	// (test with errors.Is) when it has a card and was left alone.
	Err error
}

// ReplayMatching replays every dead letter f selects, in id order, and reports
// each. It stops early, returning the results so far and the context's
// error, only when ctx ends; a failure of one dead letter does not stop
// the others. Its error is otherwise that of listing the dead letters.
func ReplayMatching(ctx context.Context, st ReplayStore, js ReplayPublisher, f store.DeadLetterFilter) ([]ReplayResult, error) {
	if f.ID == 0 && f.Kind == "" && f.Reason != event.ReasonDuplicateConflict {
		// A filter by source or time means the requests' own failures; a
		// duplicate_conflict is not replayable (store.ErrNotReplayable),
		// and is selected only when asked for by its reason.
		f.Kind = store.DeadLetterOutcome
	}
	letters, err := st.DeadLetters(ctx, f)
	if err != nil {
		return nil, err
	}
	results := make([]ReplayResult, 0, len(letters))
	for _, l := range letters {
		if err := ctx.Err(); err != nil {
			return results, err
		}
		d, err := Replay(ctx, st, js, l.ID)
		if d.ID == 0 {
			d = l
		}
		results = append(results, ReplayResult{DeadLetter: d, Err: err})
	}
	return results, nil
}

// ReplayMessage is the message Replay republishes for d: the original, less the
// server directives it carried, plus the replay generation.
//
// Headers named Nats-* are dropped: they tell JetStream how to store a
// message (Nats-Msg-Id, Nats-Expected-Last-Sequence...), and the original
// ones would get the replay dropped as a duplicate or refused. Nats-Msg-Id
// is set anew for each message, so a publish retried by the client is
// stored once; it ends with 128 random bits, because JetStream's duplicate
// window is the stream's, whatever the subject: any publisher who could
// guess it (an ERP, on its own subject) could have the replay dropped.
func ReplayMessage(d store.DeadLetter) *nats.Msg {
	h := nats.Header{}
	for k, vs := range d.Header {
		if strings.HasPrefix(strings.ToLower(k), "nats-") || strings.EqualFold(k, ReplayHeader) {
			continue
		}
		h[k] = append([]string(nil), vs...)
	}
	h.Set(ReplayHeader, strconv.Itoa(d.ReplayCount))
	var nonce [16]byte
	_, _ = rand.Read(nonce[:]) // crypto/rand.Read never fails (Go 1.24)
	h.Set(jetstream.MsgIDHeader, fmt.Sprintf("cardbridge-replay-%d-%d-%x", d.ID, d.ReplayCount, nonce))
	return &nats.Msg{Subject: replaySubject(d), Header: h, Data: d.Data}
}

// replaySubject is where d's replay is published: the subject it arrived on,
// unless its source has since been bound to a publisher (store.Replay sets
// d.Publisher). A dead letter kept under its request came either on that
// publisher's subject or, trusted, on the contract's subject before the
// publisher was set; replayed there now, it would be refused as not its
// publisher's, and its request never answered. cardbridge's own NATS user
// publishes the replay on the publisher's subject instead.
func replaySubject(d store.DeadLetter) string {
	if d.Publisher == "" || strings.HasSuffix(d.Subject, "."+d.Publisher) {
		return d.Subject
	}
	return d.Subject + "." + d.Publisher
}

// ReplayRefused reports whether err is a deliberate refusal rather than a
// failure: the request already has a card, so replaying it would order a
// second one, or the dead letter is a duplicate_conflict, which has no
// request of its own to re-drive. Retrying a refused replay changes
// nothing; retrying a failed one may succeed.
func ReplayRefused(err error) bool {
	return errors.Is(err, store.ErrAlreadyIssued) || errors.Is(err, store.ErrNotReplayable) || errors.Is(err, store.ErrNoRequest)
}
