package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
)

// load is the traffic of one run: the requests, when each was published,
// and the outcomes seen for each. Times are nanoseconds since t0 on the
// monotonic clock.
type load struct {
	cfg Config
	tag string // distinguishes this run's employees and references
	t0  time.Time

	ids   []string         // request ids (UUIDs), by index
	index map[string]int32 // outcome event id -> request index; read-only once built
	// sentNS is when request i was handed to the client library, plus
	// one, so that zero means "not published". Atomic: the receiving
	// goroutine reads it, and nothing but the network orders the two.
	sentNS []atomic.Int64

	mu        sync.Mutex
	recvNS    []int64  // first outcome of request i
	outcomes  []uint16 // outcomes seen for request i
	failed    []bool   // the first outcome of request i was card.failed
	reasons   map[string]int
	unrelated int // outcomes of requests not from this run

	// Counters for the progress line and the wait, updated atomically.
	published, publishErrors atomic.Int64
	completed, duplicates    atomic.Int64
	failedCount              atomic.Int64
	lastRecvNS               atomic.Int64
	notify                   chan struct{} // a token whenever completed grows
}

// newLoad prepares n requests with fresh UUIDs. Deriving the outcome ids
// now keeps that work out of the measured window.
func newLoad(cfg Config, n int) *load {
	l := &load{
		cfg:      cfg,
		tag:      uuid.NewString()[:8],
		ids:      make([]string, n),
		index:    make(map[string]int32, n),
		sentNS:   make([]atomic.Int64, n),
		recvNS:   make([]int64, n),
		outcomes: make([]uint16, n),
		failed:   make([]bool, n),
		reasons:  map[string]int{},
		notify:   make(chan struct{}, 1),
	}
	for i := range n {
		id := uuid.NewString()
		l.ids[i] = id
		l.index[event.OutcomeID(cfg.Source, id)] = int32(i)
	}
	return l
}

// request builds request i. Every request is a valid order for a distinct
// employee of the bound client; the reference makes it findable in the
// bank and the database.
func (l *load) request(i int) event.Request {
	emp := fmt.Sprintf("E-%s-%07d", l.tag, i)
	return event.Request{
		ID:      l.ids[i],
		Source:  l.cfg.Source,
		Subject: emp,
		Time:    time.Now().UTC(),
		Data: event.RequestData{
			Employee:  event.Employee{ID: emp, FirstName: "Bench", LastName: fmt.Sprintf("Employee %d", i)},
			ClientID:  l.cfg.ClientID,
			Reference: fmt.Sprintf("bench-%s-%d", l.tag, i),
		},
	}
}

func (l *load) since() int64 { return int64(time.Since(l.t0)) }

// subscribe starts receiving outcomes. An ordered consumer on the outcome
// stream, from the message after the current last one, sees exactly what
// the stream holds (what a JetStream subscriber of cardbridge sees) and,
// unlike a core subscription, cannot silently drop messages when the
// bench falls behind. JetStream has already dropped republished duplicates
// within its window; any duplicate seen here is one that got through.
func (l *load) subscribe(ctx context.Context, js jetstream.JetStream) (jetstream.ConsumeContext, error) {
	t := broker.DefaultTopology()
	st, err := js.Stream(ctx, t.OutcomeStream)
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s (is cardbridge deployed there?): %w", t.OutcomeStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", t.OutcomeStream, err)
	}
	cons, err := js.OrderedConsumer(ctx, t.OutcomeStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: t.OutcomeSubjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", t.OutcomeStream, err)
	}
	cc, err := cons.Consume(l.receive)
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", t.OutcomeStream, err)
	}
	return cc, nil
}

// receive records one outcome event. It runs on the consumer's goroutine
// and does little: the event id is the Nats-Msg-Id header (the contract
// makes them equal), and only card.failed is decoded, for its reason.
func (l *load) receive(m jetstream.Msg) {
	now := l.since()
	id := m.Headers().Get(jetstream.MsgIDHeader)
	var out *event.Outcome
	if id == "" {
		o, err := event.DecodeOutcome(m.Headers(), m.Data())
		if err != nil {
			l.mu.Lock()
			l.unrelated++
			l.mu.Unlock()
			return
		}
		id, out = o.ID, &o
	}
	i, ok := l.index[id]
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok {
		l.unrelated++
		return
	}
	l.outcomes[i]++
	if l.outcomes[i] > 1 {
		l.duplicates.Add(1)
		return
	}
	l.recvNS[i] = now
	if m.Subject() == event.TypeCardFailed {
		l.failed[i] = true
		l.failedCount.Add(1)
		reason := "(undecodable)"
		if out == nil {
			if o, err := event.DecodeOutcome(m.Headers(), m.Data()); err == nil {
				out = &o
			}
		}
		if out != nil {
			if f, ok := out.Data.(event.Failed); ok {
				reason = f.Reason
			}
		}
		l.reasons[reason]++
	}
	l.lastRecvNS.Store(now)
	l.completed.Add(1)
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// publish publishes every request, from cfg.Publishers goroutines, and
// waits until JetStream acknowledged them all. With a rate, request i is
// due at t0 + i/rate: when the publishers fall behind they catch up
// without pausing, so the achieved rate is the asked one on average.
func (l *load) publish(ctx context.Context, js jetstream.JetStream) error {
	n := len(l.ids)
	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for range l.cfg.Publishers {
		g.Go(func() error {
			var timer *time.Timer
			defer func() {
				if timer != nil {
					timer.Stop()
				}
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return nil
				}
				if l.cfg.Rate > 0 {
					due := time.Duration(float64(i) / l.cfg.Rate * float64(time.Second))
					if wait := due - time.Since(l.t0); wait > 0 {
						if timer == nil {
							timer = time.NewTimer(wait)
						} else {
							timer.Reset(wait)
						}
						select {
						case <-timer.C:
						case <-gctx.Done():
							return gctx.Err()
						}
					}
				}
				msg, err := event.EncodeRequest(l.request(i), event.Binary)
				if err != nil {
					return err
				}
				l.sentNS[i].Store(l.since() + 1)
				// A long stall wait: when the window is full the publisher
				// should wait for acknowledgements, not fail.
				if _, err := js.PublishMsgAsync(msg.NATS(), jetstream.WithStallWait(time.Minute)); err != nil {
					l.sentNS[i].Store(0)
					l.publishErrors.Add(1)
					if gctx.Err() != nil {
						return gctx.Err()
					}
					continue
				}
				l.published.Add(1)
			}
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishErrorHandler counts asynchronous publish failures (no
// acknowledgement from JetStream). Such a request may or may not be in
// the stream, so it stays expected; the run fails either way.
func (l *load) publishErrorHandler(_ jetstream.JetStream, _ *nats.Msg, _ error) {
	l.publishErrors.Add(1)
}

// awaitOutcomes waits until every published request has an outcome. It
// gives up when no outcome arrived for idle, or after timeout (0: never),
// and reports whether everything arrived.
func (l *load) awaitOutcomes(ctx context.Context, idle, timeout time.Duration) (bool, error) {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	idleTimer := time.NewTimer(idle)
	defer idleTimer.Stop()
	for l.completed.Load() < l.published.Load() {
		select {
		case <-l.notify:
			idleTimer.Reset(idle)
		case <-idleTimer.C:
			return false, nil
		case <-deadline:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return true, nil
}

// settle keeps listening for d after the last expected outcome: a
// duplicate, should there be one, arrives after the original.
func (l *load) settle(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
