package consumer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/consumer/decision"
)

// How messages are fetched. A process asks JetStream only for as many
// messages as it has free handlers, in one pull request at a time:
//
//   - Nothing waits in a buffer: a message is with a handler, and kept
//     alive (keepAlive) from the moment it arrives, so a short AckWait
//     redelivers the messages of a killed process within seconds without
//     redelivering those a live process is working on.
//   - Work is shared: JetStream hands the messages of a busy stream to the
//     waiting pull requests in turn, one message each, so two processes
//     with free handlers each get a share, and a process takes more only
//     as fast as it frees handlers.
//
// A pull request that is not filled ends after pullExpiry; the next asks
// for every handler free by then.

// Fetch tuning.
const (
	// pullExpiry is how long one pull request waits for messages. It bounds
	// how long a shutdown or a pause waits for the pull to end (its late
	// messages are handed back), not how long a message waits.
	pullExpiry = time.Second
	// pullLinger is how long a busy process waits for more handlers to
	// free before it asks for fewer than minPull(size) messages: a pull
	// per freed handler would cost a round trip per message.
	pullLinger = 5 * time.Millisecond
	// fetchErrorPause spaces out pull requests that fail (NATS
	// reconnecting, say), so the log is not flooded.
	fetchErrorPause    = 100 * time.Millisecond
	maxFetchErrorPause = 5 * time.Second
)

// minPull is the pull size a busy process waits for (up to pullLinger):
// a sixteenth of its handlers.
func minPull(size int) int { return max(1, size/16) }

// puller hands messages of one JetStream consumer to a fixed pool of
// handlers, fetching only for free ones.
type puller struct {
	cons jetstream.Consumer
	// size is the number of handlers.
	size int
	// handle handles one message to its end (acknowledged, terminated or
	// handed back).
	handle func(jetstream.Msg)
	// paused tells whether to stop fetching (a pause of the process);
	// messages that arrive while paused are handed back after decision.PauseHandBack.
	paused func() bool
	// expiry of a pull request (pullExpiry).
	expiry time.Duration
	log    *slog.Logger

	free     chan struct{} // one token per free handler
	handoff  chan jetstream.Msg
	wg       sync.WaitGroup
	failures int // pulls failed in a row
}

func newPuller(cons jetstream.Consumer, size int, handle func(jetstream.Msg), paused func() bool, log *slog.Logger) *puller {
	p := &puller{cons: cons, size: size, handle: handle, paused: paused, expiry: pullExpiry, log: log,
		free: make(chan struct{}, size), handoff: make(chan jetstream.Msg)}
	for range size {
		p.free <- struct{}{}
	}
	// A fixed pool of handlers, each taking messages one at a time: a
	// goroutine per message would grow a fresh stack through decoding,
	// the bank call and the commit every time.
	for range size {
		p.wg.Go(func() {
			for msg := range p.handoff {
				p.handle(msg)
				p.free <- struct{}{}
			}
		})
	}
	return p
}

// close waits for the handlers to finish their messages.
func (p *puller) close() {
	close(p.handoff)
	p.wg.Wait()
}

// fetch passes messages to the handlers until ctx ends, stop is closed or
// paused() is true. Messages that arrive after that are handed back: at
// once at shutdown, for another process; after decision.PauseHandBack when pausing.
func (p *puller) fetch(ctx context.Context, stop <-chan struct{}) {
	for ctx.Err() == nil && !p.paused() {
		n := p.reserve(ctx, stop)
		if n == 0 {
			return
		}
		if ctx.Err() != nil || p.paused() || closed(stop) {
			p.release(n)
			return
		}
		batch, err := p.cons.Fetch(n, jetstream.FetchMaxWait(p.expiry))
		if err != nil {
			p.release(n)
			p.fetchFailed(ctx, err)
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			switch {
			case ctx.Err() != nil:
				// Fetched but not started: hand it back at once.
				_ = msg.Nak()
				p.release(1)
			case p.paused():
				_ = msg.NakWithDelay(decision.PauseHandBack)
				p.release(1)
			default:
				// A handler is free (this message holds its token): it
				// starts at once, and keeps the message alive from now.
				p.handoff <- msg
			}
		}
		p.release(n - got)
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			p.fetchFailed(ctx, err)
		} else {
			p.failures = 0
		}
	}
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// reserve takes the tokens of the handlers that are free, waiting for one
// at least, and for minPull while the process is busy (up to pullLinger).
// It returns 0 when ctx ends or stop is closed first.
func (p *puller) reserve(ctx context.Context, stop <-chan struct{}) int {
	select {
	case <-p.free:
	case <-ctx.Done():
		return 0
	case <-stop:
		return 0
	}
	n := 1 + p.takeFree()
	if want := minPull(p.size); n < want {
		linger := time.NewTimer(pullLinger)
		defer linger.Stop()
		for n < want {
			select {
			case <-p.free:
				n += 1 + p.takeFree()
				continue
			case <-linger.C:
			case <-ctx.Done():
			case <-stop:
			}
			break
		}
	}
	return n
}

// takeFree takes every free token there is now, without waiting.
func (p *puller) takeFree() int {
	n := 0
	for {
		select {
		case <-p.free:
			n++
		default:
			return n
		}
	}
}

func (p *puller) release(n int) {
	for range n {
		p.free <- struct{}{}
	}
}

// fetchFailed logs a failed pull (NATS reconnecting and the like: a later
// pull recovers) and waits before the next, also at shutdown, so as not to
// spin: fetchErrorPause, doubling while pulls keep failing, up to
// maxFetchErrorPause.
func (p *puller) fetchFailed(ctx context.Context, err error) {
	if ctx.Err() == nil {
		p.log.Warn("fetching messages", "err", err, "failures_in_a_row", p.failures+1)
	}
	wait := min(fetchErrorPause<<min(p.failures, 6), maxFetchErrorPause)
	p.failures++
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
