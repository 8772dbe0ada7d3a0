package relay

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/store"
)

// Waiting for acknowledgements without waiting for one that will not come.
//
// A stream's leader takes the messages sent to it in order and answers in
// that order, on the path they came by. So when a publish is answered, an
// earlier one still unanswered was lost: its leader went (killed, or
// demoted, and a new one was elected) with the message or its answer. The
// relay does not wait out PublishWait for it: it publishes the event again
// (Committed's) or leaves its row for the next sweep (a sweep's), and
// JetStream drops the copy if the first was stored after all.
//
// Only answers that prove the order count: a new message stored (a
// duplicate is answered at once, ahead of earlier messages still being
// replicated), or "no responders" (no stream leader at all). Any wrong
// guess costs a duplicate publish, which JetStream drops.

// errLost settles a publish whose answer will not come.
var errLost = errors.New("unanswered while a later publish was answered: the stream's leader changed")

// errAckTimeout settles a publish not answered within PublishWait.
var errAckTimeout = errors.New("timed out waiting for the JetStream ack")

// evidenceTick is how often a wait looks at answers other waits took.
const evidenceTick = 50 * time.Millisecond

// answers is the evidence, shared by the relay's publishes: the latest
// start of a publish known to be answered in order.
type answers struct {
	epoch  time.Time
	latest atomic.Int64 // nanoseconds since epoch (monotonic); 0: none
	stored atomic.Int64 // the same, of a new message stored
}

func newAnswers() answers { return answers{epoch: time.Now()} }

func (a *answers) now() int64 { return int64(time.Since(a.epoch)) + 1 }

// note records that the publish started at start was answered.
func (a *answers) note(start int64) {
	for {
		cur := a.latest.Load()
		if start <= cur || a.latest.CompareAndSwap(cur, start) {
			return
		}
	}
}

// storedAt records that a new message was stored at t.
func (a *answers) storedAt(t int64) {
	for {
		cur := a.stored.Load()
		if t <= cur || a.stored.CompareAndSwap(cur, t) {
			return
		}
	}
}

// storedSince reports whether a new message was stored after t.
func (a *answers) storedSince(t int64) bool { return a.stored.Load() > t }

// after reports whether a publish started after sent (the end of another
// publish) was answered.
func (a *answers) after(sent int64) bool { return a.latest.Load() > sent }

// flight is one publish of an event, and its answer once taken.
type flight struct {
	eventID  string
	event    store.OutboxEvent
	end      func(error) // the Observer's, or nil; called once
	first    time.Time   // the first attempt
	attempts int

	ok       <-chan *jetstream.PubAck
	errc     <-chan error
	start    int64     // answers clock before the publish
	sentAt   int64     // answers clock after it
	sent     time.Time // after it
	waitFrom time.Time // PublishWait runs from here: the publish, not a probe
	probing  bool      // the last publish was a probe
	settled  bool
	err      error // nil: stored, or recognised as a duplicate
}

// publish sends fl's event (again), asynchronously.
func (fl *flight) publish(js jetstream.JetStream, a *answers) error {
	return fl.send(js, a, false)
}

// send publishes fl's event; a probe is a copy sent while the first waits
// (see queue.probe), within the first's PublishWait.
func (fl *flight) send(js jetstream.JetStream, a *answers, probe bool) error {
	if fl.first.IsZero() {
		fl.first = time.Now()
	}
	fl.probing = probe
	if !probe {
		fl.attempts++
	}
	fl.settled, fl.err = false, nil
	fl.start = a.now()
	f, err := js.PublishMsgAsync(fl.event.NATS(), jetstream.WithMsgID(fl.eventID))
	if err != nil {
		return err
	}
	fl.ok, fl.errc = f.Ok(), f.Err()
	fl.sent, fl.sentAt = time.Now(), a.now()
	if !probe {
		fl.waitFrom = fl.sent
	}
	return nil
}

// answer settles fl with what JetStream said, and records it as evidence
// when it proves the order.
func (fl *flight) answer(ack *jetstream.PubAck, err error, a *answers) {
	fl.settled, fl.err = true, err
	stored := err == nil && ack != nil && !ack.Duplicate
	// A probe answered at all proves a leader answers now, and that
	// the publishes before it are lost or answered.
	if stored || (fl.probing && err == nil) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		a.note(fl.start)
	}
	if stored {
		a.storedAt(a.now())
	}
}

// poll takes fl's answer if it has come, or gives it up as lost or late.
func (fl *flight) poll(a *answers, timeout time.Duration) bool {
	if fl.settled {
		return true
	}
	select {
	case ack := <-fl.ok:
		fl.answer(ack, nil, a)
	case err := <-fl.errc:
		fl.answer(nil, err, a)
	default:
		switch {
		case a.after(fl.sentAt):
			fl.settled, fl.err = true, errLost
		case time.Since(fl.waitFrom) >= timeout:
			fl.settled, fl.err = true, errAckTimeout
		}
	}
	return fl.settled
}

// logLevel is how loud a failure of fl is: a warning the first time, for
// debugging after (an election fails every publish until it ends).
func (fl *flight) logLevel() slog.Level {
	if fl.attempts > 1 {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

func (fl *flight) finish(err error) {
	if fl.end != nil {
		fl.end(err)
		fl.end = nil
	}
}

// queue is publishes in the order they were sent.
type queue struct{ fl []*flight }

func (q *queue) push(fl *flight) { q.fl = append(q.fl, fl) }
func (q *queue) empty() bool     { return len(q.fl) == 0 }

// settled removes and returns the first publish if it is settled, else
// returns nil.
func (q *queue) settled(a *answers, timeout time.Duration) *flight {
	if len(q.fl) == 0 || !q.fl[0].poll(a, timeout) {
		return nil
	}
	fl := q.fl[0]
	q.fl[0] = nil
	q.fl = q.fl[1:]
	if len(q.fl) == 0 {
		q.fl = nil
	}
	return fl
}

// probe publishes again the first publish of q when it has waited
// probeAfter without an answer: the copy is dropped as a duplicate if the
// first was stored, and answered by the current leader either way, so a
// lone publish lost with its leader (no later one to prove it) is not
// waited for until PublishWait. A probe that cannot be sent settles it.
func (q *queue) probe(js jetstream.JetStream, a *answers) {
	if len(q.fl) == 0 || q.fl[0].settled || time.Since(q.fl[0].sent) < probeAfter {
		return
	}
	fl := q.fl[0]
	if err := fl.send(js, a, true); err != nil {
		fl.settled, fl.err = true, err
	}
}

// probeAfter is how long a publish waits for its answer before it is
// probed; JetStream answers within milliseconds when it has a leader.
const probeAfter = time.Second

// waiter is what can settle the first publish of a queue: its answer, a
// later one's answer (evidence), its deadline, or another wait's evidence
// (tick). Its channels are nil when the queue is empty.
type waiter struct {
	head, tail       *flight
	headOk, tailOk   <-chan *jetstream.PubAck
	headErr, tailErr <-chan error
	deadline         <-chan time.Time
	tick             <-chan time.Time
	timer            *time.Timer
}

// waiting prepares a waiter for q's first publish, which must be
// unsettled; tick is the caller's evidence ticker.
func (q *queue) waiting(timeout time.Duration, tick <-chan time.Time) waiter {
	var w waiter
	if len(q.fl) == 0 {
		return w
	}
	w.head = q.fl[0]
	w.headOk, w.headErr = w.head.ok, w.head.errc
	if t := q.fl[len(q.fl)-1]; t != w.head && !t.settled {
		w.tail = t
		w.tailOk, w.tailErr = t.ok, t.errc
	}
	w.timer = time.NewTimer(timeout - time.Since(w.head.waitFrom))
	w.deadline = w.timer.C
	w.tick = tick
	return w
}

func (w *waiter) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}
