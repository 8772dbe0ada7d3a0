package consumer

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/store"
)

// Requests answered before the database lost their records.
//
// The inbox row is what makes a second delivery of a request harmless. A
// database that loses commits (a failover to an asynchronous standby, a
// restore from a backup) loses inbox rows of requests whose outcome events
// are on the outcome stream already. A request sent again after that (by
// the ERP, as a new message) would be ordered again and answered a second
// time: JetStream's duplicate window drops the second copy only if it
// comes within the window of the first, and the bank returns the same card
// only while it remembers the order's Idempotency-Key.
//
// So a request without an inbox row whose first appearance (the earlier
// of its CloudEvent time and its message's time in the stream) is older
// than AnsweredAfter (half the outcome stream's duplicate window by
// default) is looked for on the outcome stream first, by its outcome's
// deterministic event id. A younger one needs no look: an outcome it had
// was published within the window, and the second copy would fall in it.
// In steady state no request is that old, and the check costs nothing.
//
// The stream has no index by event id, so the check reads its headers
// (broker.IDReader) from the oldest pending request's first appearance,
// and keeps the ids it read and its consumer: the checks that pile up
// while a scan runs are served by the next one, which reads only what the
// stream took since.
// When the stream cannot be read, the request is retried (FaultInfra), for
// at most the hold limit; then it is ordered unchecked, with a warning, as
// the relay does with old rows (relay/stale.go): a request stuck for ever
// would be worse than the rare second outcome the check is there for.

const (
	// DefaultAnsweredAfter is the age past which a request without an
	// inbox row is looked for on the outcome stream: half of
	// broker.DuplicateWindow, leaving the other half for the bank call,
	// the commit, the publish and clocks that differ.
	DefaultAnsweredAfter = broker.DuplicateWindow / 2
	// answeredSlack starts a scan this long before the request's first
	// appearance, for clocks that differ between the ERP, NATS and
	// this process.
	answeredSlack = time.Minute
	// maxAnsweredIDs bounds the ids kept (36 MiB at most, measured); past it a
	// check is incomplete, and counts as a failed one.
	maxAnsweredIDs = 1_000_000
	// answeredIdle is how long the ids are kept after the last check:
	// longer than twice the longest default retry delay, so that a request
	// retried at that delay finds them still there rather than scanning
	// from its first appearance again on every delivery.
	answeredIdle = 11 * time.Minute
	// answeredReaderIdle is how long the reader's consumer is trusted to
	// exist unused (the server deletes it after a minute).
	answeredReaderIdle = 30 * time.Second
	// answeredWait bounds each call to NATS; answeredScanLimit a whole scan.
	answeredWait      = 5 * time.Second
	answeredScanLimit = time.Minute
	// defaultAnsweredHold is how long a request waits for a check that
	// keeps failing before it is ordered unchecked.
	defaultAnsweredHold = time.Minute
	// answeredSpellGap: failed checks further apart than this are not one
	// spell of failures. A request whose check failed comes back within
	// decision.MaxInfraDelay, so a spell has no gap longer than that.
	answeredSpellGap = 2 * decision.MaxInfraDelay
)

var errAnsweredIncomplete = errors.New("the outcome stream holds more messages since the request than a check reads")

// answered looks for requests' outcomes on the outcome stream.
type answered struct {
	js        jetstream.JetStream
	stream    string
	after     time.Duration
	holdLimit time.Duration
	spellGap  time.Duration
	// now is the clock of the hold limit and the spell gap (time.Now);
	// tests set another, so that a hold limit passes without waiting.
	now func() time.Time
	// maxIDs bounds the ids kept (maxAnsweredIDs); slack is answeredSlack.
	maxIDs int
	slack  time.Duration
	log    *slog.Logger
	obs    Observer

	mu       sync.Mutex
	pending  []*answerWait
	scanning bool
	// failing is since when checks have failed (zero when the last one
	// worked), tried when one was last tried.
	failing, tried time.Time

	// The ids read so far: the stream's messages from from to last (a
	// stream sequence; 0 before any was read), by maphash of the id, with
	// their sequence. Only the one scanning goroutine uses them, or the
	// idle timer once it has stopped, under idsMu.
	idsMu sync.Mutex
	seed  maphash.Seed
	from  time.Time
	last  uint64
	ids   map[uint64]uint64
	used  time.Time
	idle  *time.Timer
	// reader goes on reading the stream from last, nil when closed.
	reader *broker.IDReader
}

type answerWait struct {
	id    string
	since time.Time
	done  chan struct{}
	seq   uint64
	found bool
	err   error
}

func newAnswered(cfg Config, log *slog.Logger) *answered {
	if cfg.Stream == nil {
		return nil
	}
	return &answered{js: cfg.Stream, stream: cfg.OutcomeStream, after: cfg.AnsweredAfter, holdLimit: defaultAnsweredHold,
		spellGap: answeredSpellGap, now: time.Now, maxIDs: maxAnsweredIDs, slack: answeredSlack, log: log, obs: cfg.observer(), seed: maphash.MakeSeed()}
}

// mayHaveBeenAnswered reports whether a request without an inbox row is
// old enough to be looked for on the outcome stream, and from when.
func (a *answered) mayHaveBeenAnswered(d *delivery) (time.Time, bool) {
	if a == nil || d.req == nil {
		return time.Time{}, false
	}
	first := d.meta.Timestamp
	if t := d.req.Time; !t.IsZero() && t.Before(first) && !d.isReplay() {
		first = t
	}
	return first, time.Since(first) >= a.after
}

// isReplay reports whether the delivery is the replay cardbridge
// republished for the request's current generation (Replay): it first
// appeared when it was stored, whatever its CloudEvent time says, for an
// outcome of its generation cannot be older than the replay.
func (d *delivery) isReplay() bool {
	return d.adm.Generation > 0 && d.msg.Headers().Get(ReplayHeader) == strconv.Itoa(d.adm.Generation)
}

// answeredBefore looks for the outcome of a request that has no inbox row
// but may have been answered before its records were lost. done is true
// when that settles the delivery: the outcome is on the stream (its inbox
// row is rebuilt from it, and nothing is published), or the stream could
// not be read (the request is retried, within the hold limit).
func (c *Consumer) answeredBefore(ctx context.Context, d *delivery, hash []byte) (dec decision.Decision, done bool) {
	a := c.answered
	first, old := a.mayHaveBeenAnswered(d)
	if !old {
		return decision.Decision{}, false
	}
	id := d.ref.OutcomeID()
	if a.releasedWithoutTrying() {
		// One line per request: each names one that may be answered twice.
		c.log.Warn("request ordered without looking for an earlier outcome: the outcome stream could not be read for the hold limit; it may be answered twice",
			append(d.logAttrs(), "stream", a.stream, "event_id", id)...)
		return decision.Decision{}, false
	}
	msg, err := a.find(ctx, id, first)
	if err != nil {
		if ctx.Err() != nil {
			return c.decide(d, decision.Facts{Fault: decision.FaultShutdown}, err), true
		}
		if a.checkFailed(err) {
			c.log.Warn("request ordered without looking for an earlier outcome: the outcome stream could not be read; it may be answered twice",
				append(d.logAttrs(), "stream", a.stream, "event_id", id, "err", err)...)
			return decision.Decision{}, false
		}
		return c.decide(d, decision.Facts{Fault: decision.FaultInfra, Deliveries: d.meta.NumDelivered},
			fmt.Errorf("looking for the request's outcome on %s: %w", a.stream, err)), true
	}
	a.checkSucceeded()
	if msg == nil {
		return decision.Decision{}, false
	}
	return c.recordAnswered(ctx, d, hash, msg), true
}

// recordAnswered rebuilds the inbox row (and card order, or dead letter) of
// a request whose outcome event msg is on the stream, publishing nothing.
func (c *Consumer) recordAnswered(ctx context.Context, d *delivery, hash []byte, msg *jetstream.RawStreamMsg) decision.Decision {
	attrs := append(d.logAttrs(), "stream", c.answered.stream, "outcome_seq", msg.Sequence, "event_id", msg.Header.Get(jetstream.MsgIDHeader))
	o, err := event.DecodeOutcome(msg.Header, msg.Data)
	comp := store.Completion{Source: d.ref.Source, RequestID: d.ref.ID, PayloadHash: hash, HadRetries: d.hadRetries || d.adm.Retries != nil}
	switch data := o.Data.(type) {
	case event.Issued:
		comp.Outcome = store.OutcomeIssued
		if b := d.adm.Binding; b != nil {
			comp.Card = &store.CardOrder{
				ClientID: data.ClientID, EmployeeID: data.EmployeeID,
				SavingsAccountID: b.SavingsAccountID, CardProductID: data.ProductID,
				IdempotencyKey: IdempotencyKey(d.ref.Source, d.ref.ID, d.adm.OrderKeyGeneration),
				CardID:         data.CardID, CardToken: data.CardToken, Status: data.Status, IssuedAt: data.IssuedAt,
			}
		}
	case event.Failed:
		comp.Outcome, comp.Reason = store.OutcomeFailed, data.Reason
		comp.DeadLetter = d.deadLetter(event.Failure{Reason: data.Reason, Message: data.Message, BankErrorCode: data.BankErrorCode})
	default:
		// Its id says it is this request's outcome, whatever else it
		// says: publishing another would answer twice. Without a record,
		// the next copy of the request is looked for again.
		c.log.Error("request answered before, by an outcome that cannot be read; acknowledged without a record",
			append(attrs, "type", o.Type, "err", err)...)
		return decision.Decision{Action: decision.Ack}
	}
	inserted, err := c.store.Complete(ctx, comp)
	if err != nil {
		// Not settle: a failure committed now would be a second outcome.
		return c.decide(d, decision.Facts{Fault: decision.FaultOf(err), Deliveries: d.meta.NumDelivered}, err)
	}
	if inserted {
		c.log.Warn("request answered before its records were lost: its inbox row is rebuilt from its outcome on the stream, and nothing is published",
			append(attrs, "outcome", comp.Outcome)...)
	}
	return decision.Decision{Action: decision.Ack}
}

// find returns the message of the event id on the stream, nil when the
// stream holds none since since.
func (a *answered) find(ctx context.Context, id string, since time.Time) (*jetstream.RawStreamMsg, error) {
	seq, found, err := a.check(ctx, id, since)
	if err != nil || !found {
		return nil, err
	}
	gctx, cancel := context.WithTimeout(ctx, answeredWait)
	defer cancel()
	st, err := a.js.Stream(gctx, a.stream)
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", a.stream, err)
	}
	msg, err := st.GetMsg(gctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil // gone since the scan (the stream's limits)
	case err != nil:
		return nil, fmt.Errorf("reading message %d of stream %s: %w", seq, a.stream, err)
	case msg.Header.Get(jetstream.MsgIDHeader) != id:
		return nil, nil // another id with the same hash
	}
	return msg, nil
}

// check reports whether the stream holds a message with the id, stored
// since since, and its sequence. Checks made while a scan runs wait for the
// next, which serves them all.
func (a *answered) check(ctx context.Context, id string, since time.Time) (seq uint64, found bool, err error) {
	w := &answerWait{id: id, since: since, done: make(chan struct{})}
	a.mu.Lock()
	a.pending = append(a.pending, w)
	if !a.scanning {
		a.scanning = true
		go a.scanPending()
	}
	a.mu.Unlock()
	select {
	case <-w.done:
		return w.seq, w.found, w.err
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
}

// scanPending serves the pending checks, a batch per scan, until none is
// left.
func (a *answered) scanPending() {
	for {
		a.mu.Lock()
		batch := a.pending
		a.pending = nil
		if len(batch) == 0 {
			a.scanning = false
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		a.serve(batch)
	}
}

// serve scans the stream once for a batch of checks: from where the last
// scan stopped, or afresh from the batch's oldest start when the ids kept
// do not go back that far.
func (a *answered) serve(batch []*answerWait) {
	since := batch[0].since
	for _, w := range batch[1:] {
		if w.since.Before(since) {
			since = w.since
		}
	}
	since = since.Add(-a.slack)

	a.idsMu.Lock()
	defer a.idsMu.Unlock()
	now := time.Now()
	if a.ids == nil || since.Before(a.from) || now.Sub(a.used) > answeredIdle {
		a.closeReader()
		a.ids, a.from, a.last = map[uint64]uint64{}, since, 0
	} else if now.Sub(a.used) > answeredReaderIdle {
		a.closeReader() // its consumer may be gone: the server deletes it after a minute unused
	}
	a.used = now
	if a.idle == nil {
		a.idle = time.AfterFunc(answeredIdle, a.dropIfIdle)
	} else {
		a.idle.Reset(answeredIdle)
	}

	ctx, cancel := context.WithTimeout(context.Background(), answeredScanLimit)
	defer cancel()
	res, err := a.readRoom(ctx)
	if err == nil && !res.Complete && a.from.Before(since) {
		// The ids kept fill their bound, and reach back further than this
		// batch needs (checks during a long backlog go on from the first
		// one's start): start afresh from the batch's start rather than
		// fail checks that need far fewer.
		a.closeReader()
		a.ids, a.from, a.last = map[uint64]uint64{}, since, 0
		more, moreErr := a.readRoom(ctx)
		more.Read += res.Read
		res, err = more, moreErr
	}
	if err == nil && !res.Complete {
		err = fmt.Errorf("%w (%d)", errAnsweredIncomplete, a.maxIDs)
	}
	a.obs.AnsweredScan(res.Read, err)
	for _, w := range batch {
		w.seq, w.found = a.ids[maphash.String(a.seed, w.id)]
		if !w.found {
			w.err = err
		}
		close(w.done)
	}
}

// readRoom reads (see read) as many ids as there is room for.
func (a *answered) readRoom(ctx context.Context) (broker.IDScanResult, error) {
	room := a.maxIDs - len(a.ids)
	if room <= 0 {
		return broker.IDScanResult{}, nil
	}
	return a.read(ctx, uint64(room))
}

// read reads what the stream took since the last read (from a.from for
// the first) into the ids, through the reader, opened when there is none.
func (a *answered) read(ctx context.Context, max uint64) (broker.IDScanResult, error) {
	reused := a.reader != nil
	if !reused {
		r, err := broker.OpenIDReader(ctx, a.js, broker.IDScan{Stream: a.stream, Since: a.from, AfterSeq: a.last, Wait: answeredWait})
		if err != nil {
			return broker.IDScanResult{}, err
		}
		a.reader = r
	}
	res, err := a.reader.Read(ctx, max, func(seq uint64, id string) bool {
		a.ids[maphash.String(a.seed, id)] = seq
		return true
	})
	if res.LastSeq > 0 {
		a.last = res.LastSeq
	}
	if err != nil {
		a.closeReader() // where it stands is unknown: the next read starts after a.last
		if rest := max - min(max, res.Read); reused && rest > 0 && ctx.Err() == nil {
			// Its consumer may have gone (a NATS restart, a leader
			// change): one more try with a fresh one.
			more, err := a.read(ctx, rest)
			more.Read += res.Read
			return more, err
		}
	}
	return res, err
}

func (a *answered) closeReader() {
	if a.reader != nil {
		a.reader.Close(context.Background())
		a.reader = nil
	}
}

// dropIfIdle frees the ids, and deletes the reader's consumer, once no
// check has used them for answeredIdle.
func (a *answered) dropIfIdle() {
	a.idsMu.Lock()
	defer a.idsMu.Unlock()
	if time.Since(a.used) >= answeredIdle {
		a.closeReader()
		a.ids, a.last = nil, 0
	}
}

// releasedWithoutTrying reports whether checks have failed for the hold
// limit and one was tried less than a hold limit ago: requests are ordered
// unchecked without another try.
func (a *answered) releasedWithoutTrying() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	return !a.failing.IsZero() && now.Sub(a.failing) >= a.holdLimit && now.Sub(a.tried) < a.holdLimit
}

// checkFailed records a failed check and reports whether its request is to
// be ordered unchecked (checks have failed for the hold limit). A spell of
// failures is one whose checks come less than spellGap apart: a failed
// check after none for that long (its request was answered by another
// process, say) starts a new one, rather than counting from a failure long
// ago and releasing its request at once.
func (a *answered) checkFailed(err error) (release bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if a.failing.IsZero() || now.Sub(a.tried) >= a.spellGap {
		a.failing = now
	}
	a.tried = now
	return now.Sub(a.failing) >= a.holdLimit
}

func (a *answered) checkSucceeded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failing = time.Time{}
}
