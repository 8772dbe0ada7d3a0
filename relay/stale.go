package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/broker"
	"github.com/cardbridge/cardbridge/store"
)

// Rows older than the duplicate window.
//
// Nats-Msg-Id makes a second publish of an event harmless only within its
// stream's duplicate window (see broker.DuplicateWindow). A row can outlive
// the window after its event was stored: its process was killed between
// JetStream's acknowledgement and the delete, or a publish timed out after
// the server had stored it, and no sweep took the row for that long (a lone
// process that stayed down). Before a sweep publishes such a row, it reads
// the message ids the stream took since shortly before the row was
// committed, and deletes the rows whose events are there without
// publishing them again.

const (
	// scanSlack starts the scan this long before the oldest row's commit,
	// for clocks that differ between the database, this process and NATS.
	scanSlack = time.Minute
	// maxScan bounds the messages one scan reads. Past it, a row not seen
	// yet is published again, with a warning: a stuck outcome would be
	// worse than a second copy with the same event id.
	maxScan = 1_000_000
	// defaultHoldLimit is how long an old row waits for a check that keeps
	// failing (the stream cannot be read: NATS permissions, the account's
	// consumer limit) before it is published unchecked, with a warning,
	// for the same reason.
	defaultHoldLimit = time.Minute
	// streamNameTTL is how long the stream of a subject is remembered; its
	// window is read afresh for every batch that needs it.
	streamNameTTL = time.Minute
)

var errHeld = errors.New("outcomes older than the duplicate window wait for a check of their stream")

// staleState is what the relay remembers between sweeps for old rows.
type staleState struct {
	holdLimit time.Duration
	mu        sync.Mutex
	names     map[string]streamName // by subject
	held      map[string]time.Time  // event id -> when its check first failed
}

type streamName struct {
	name string
	read time.Time
}

func (r *Relay) streamNameOf(ctx context.Context, subject string) (string, error) {
	r.stale.mu.Lock()
	n, ok := r.stale.names[subject]
	r.stale.mu.Unlock()
	if ok && time.Since(n.read) < streamNameTTL {
		return n.name, nil
	}
	name, err := r.js.StreamNameBySubject(ctx, subject)
	if err != nil {
		return "", fmt.Errorf("finding the stream of %s: %w", subject, err)
	}
	r.stale.mu.Lock()
	if r.stale.names == nil {
		r.stale.names = map[string]streamName{}
	}
	r.stale.names[subject] = streamName{name: name, read: time.Now()}
	r.stale.mu.Unlock()
	return name, nil
}

// oldRow is a claimed row too old for the duplicate window to cover; stream
// is empty when its stream could not be found.
type oldRow struct {
	store.OutboxEvent
	stream string
}

// split sorts claimed rows into young ones, which their stream's duplicate
// window covers, and old ones, to look for in the stream first. A row is
// young when younger than three quarters of the window: a copy falls in
// the window with a quarter of it to spare for the time until the publish.
// A row whose stream or window cannot be read is judged by the window
// cardbridge sets (broker.DuplicateWindow), so that young rows go out as
// they did before this check; the error is returned with the split.
func (r *Relay) split(ctx context.Context, events []store.OutboxEvent) (young []store.OutboxEvent, old []oldRow, err error) {
	windows := map[string]time.Duration{} // by stream, read once per batch
	for _, e := range events {
		name, lookupErr := r.streamNameOf(ctx, e.Subject)
		window, known := windows[name]
		if lookupErr == nil && !known {
			var st jetstream.Stream
			if st, lookupErr = r.js.Stream(ctx, name); lookupErr == nil {
				window = st.CachedInfo().Config.Duplicates
				windows[name] = window
			} else {
				lookupErr = fmt.Errorf("reading stream %s: %w", name, lookupErr)
			}
		}
		if lookupErr != nil {
			if err == nil {
				err = lookupErr
			}
			name, window = "", broker.DuplicateWindow
		}
		if e.Age < window*3/4 {
			young = append(young, e)
		} else {
			old = append(old, oldRow{OutboxEvent: e, stream: name})
		}
	}
	return young, old, err
}

// screen looks for old rows' events in their streams. It returns the rows
// to publish (not in the stream), those to delete without publishing (in
// the stream already) and an error when some could be neither: they stay
// for the next sweep, unless their check has failed for the hold limit, when
// they are published unchecked.
func (r *Relay) screen(ctx context.Context, old []oldRow) (publish, stored []store.OutboxEvent, err error) {
	type scanFor struct {
		since time.Time
		want  map[string]bool
		rows  []store.OutboxEvent
	}
	byStream := map[string]*scanFor{}
	var order []string
	var unchecked []store.OutboxEvent // rows whose stream is unknown
	now := time.Now()
	for _, e := range old {
		if e.stream == "" {
			unchecked = append(unchecked, e.OutboxEvent)
			continue
		}
		s := byStream[e.stream]
		if s == nil {
			s = &scanFor{since: now, want: map[string]bool{}}
			byStream[e.stream] = s
			order = append(order, e.stream)
		}
		s.want[e.EventID] = true
		s.rows = append(s.rows, e.OutboxEvent)
		if since := now.Add(-e.Age - scanSlack); since.Before(s.since) {
			s.since = since
		}
	}
	if len(unchecked) > 0 {
		err = errHeld
	}
	for _, name := range order {
		s := byStream[name]
		found, complete, scanErr := r.scan(ctx, name, s.since, s.want)
		if scanErr != nil {
			r.log.Warn("could not look for old outcomes in their stream", "stream", name, "err", scanErr)
			if err == nil || errors.Is(err, errHeld) {
				err = scanErr
			}
			unchecked = append(unchecked, s.rows...)
			continue
		}
		for _, e := range s.rows {
			switch {
			case found[e.EventID]:
				r.log.Info("outcome already stored beyond the duplicate window; its row is deleted, not published again",
					"event_id", e.EventID, "stream", name, "age", e.Age.Round(time.Second))
				stored = append(stored, e)
			case complete:
				publish = append(publish, e)
			default:
				r.log.Warn("outcome older than the duplicate window published without a full check of the stream",
					"event_id", e.EventID, "stream", name, "age", e.Age.Round(time.Second), "scanned", maxScan)
				publish = append(publish, e)
			}
		}
	}
	publish = append(publish, r.holdOrRelease(unchecked)...)
	r.forgetHeld(publish)
	r.forgetHeld(stored)
	return publish, stored, err
}

// holdOrRelease returns the unchecked rows whose check has failed for the
// hold limit, to be published anyway, and remembers the others.
func (r *Relay) holdOrRelease(unchecked []store.OutboxEvent) (release []store.OutboxEvent) {
	r.stale.mu.Lock()
	defer r.stale.mu.Unlock()
	if r.stale.held == nil {
		r.stale.held = map[string]time.Time{}
	}
	now := time.Now()
	for id, since := range r.stale.held {
		if now.Sub(since) > 10*r.stale.holdLimit { // gone another way (another process published it)
			delete(r.stale.held, id)
		}
	}
	for _, e := range unchecked {
		since, ok := r.stale.held[e.EventID]
		if !ok {
			r.stale.held[e.EventID] = now
			continue
		}
		if now.Sub(since) >= r.stale.holdLimit {
			r.log.Warn("outcome older than the duplicate window published unchecked: its stream could not be read; JetStream may store a second copy",
				"event_id", e.EventID, "age", e.Age.Round(time.Second), "held", now.Sub(since).Round(time.Second))
			release = append(release, e)
		}
	}
	return release
}

func (r *Relay) forgetHeld(events []store.OutboxEvent) {
	r.stale.mu.Lock()
	defer r.stale.mu.Unlock()
	for _, e := range events {
		delete(r.stale.held, e.EventID)
	}
}

// scan reads the ids of the messages stream took since since (headers
// only, through an ephemeral consumer) and reports which of want it holds,
// and whether it read every message up to the scan's start.
func (r *Relay) scan(ctx context.Context, stream string, since time.Time, want map[string]bool) (map[string]bool, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, r.cfg.PublishWait)
	cons, err := r.js.CreateConsumer(cctx, stream, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
	cancel()
	if err != nil {
		return nil, false, fmt.Errorf("reading stream %s for outcomes already stored: %w", stream, err)
	}
	info := cons.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = r.js.DeleteConsumer(dctx, stream, info.Name) // else it goes after InactiveThreshold
	}()
	found := map[string]bool{}
	pending := info.NumPending // the messages from since to the end, as the consumer began
	var read uint64
	for read < pending && len(found) < len(want) {
		if read >= maxScan {
			return found, false, nil
		}
		n, err := r.fetchIDs(ctx, cons, int(min(pending-read, 1000)), want, found)
		if err != nil {
			return nil, false, fmt.Errorf("reading stream %s for outcomes already stored: %w", stream, err)
		}
		if n == 0 {
			break // the rest went meanwhile (the stream's limits)
		}
		read += uint64(n)
	}
	return found, true, nil
}

// fetchIDs fetches up to n messages from cons, within PublishWait and ctx,
// and marks in found those whose Nats-Msg-Id is in want.
func (r *Relay) fetchIDs(ctx context.Context, cons jetstream.Consumer, n int, want, found map[string]bool) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, r.cfg.PublishWait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if id := m.Headers().Get(jetstream.MsgIDHeader); want[id] {
			found[id] = true
		}
	}
	return got, batch.Error()
}
