package relay

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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
	// streamTTL is how long a stream's name and window are remembered.
	streamTTL = time.Minute
)

// outcomeStream is the stream that stores a subject, and its window.
type outcomeStream struct {
	name   string
	window time.Duration
	read   time.Time
}

// streams remembers which stream stores each subject.
type streams struct {
	mu sync.Mutex
	by map[string]outcomeStream
}

func (r *Relay) streamOf(ctx context.Context, subject string) (outcomeStream, error) {
	r.streams.mu.Lock()
	s, ok := r.streams.by[subject]
	r.streams.mu.Unlock()
	if ok && time.Since(s.read) < streamTTL {
		return s, nil
	}
	name, err := r.js.StreamNameBySubject(ctx, subject)
	if err != nil {
		return outcomeStream{}, fmt.Errorf("finding the stream of %s: %w", subject, err)
	}
	st, err := r.js.Stream(ctx, name)
	if err != nil {
		return outcomeStream{}, fmt.Errorf("reading stream %s: %w", name, err)
	}
	s = outcomeStream{name: name, window: st.CachedInfo().Config.Duplicates, read: time.Now()}
	r.streams.mu.Lock()
	if r.streams.by == nil {
		r.streams.by = map[string]outcomeStream{}
	}
	r.streams.by[subject] = s
	r.streams.mu.Unlock()
	return s, nil
}

// screen splits claimed rows into those to publish and those whose events
// their stream already holds (to delete without publishing). Rows younger
// than three quarters of their stream's window are published without a
// look: a copy falls in the window, with a quarter of it to spare for the
// time between the claim and the publish. When a stream cannot be read,
// its old rows are in neither list and stay for the next sweep, since
// publishing them could make a second copy.
func (r *Relay) screen(ctx context.Context, events []store.OutboxEvent) (publish, stored []store.OutboxEvent, err error) {
	type old struct {
		since  time.Time
		want   map[string]bool
		events []store.OutboxEvent
	}
	byStream := map[string]*old{}
	var order []string
	now := time.Now()
	for _, e := range events {
		s, err := r.streamOf(ctx, e.Subject)
		if err != nil {
			return nil, nil, err
		}
		if e.Age < s.window*3/4 {
			publish = append(publish, e)
			continue
		}
		o := byStream[s.name]
		if o == nil {
			o = &old{since: now, want: map[string]bool{}}
			byStream[s.name] = o
			order = append(order, s.name)
		}
		o.want[e.EventID] = true
		o.events = append(o.events, e)
		if since := now.Add(-e.Age - scanSlack); since.Before(o.since) {
			o.since = since
		}
	}
	for _, name := range order {
		o := byStream[name]
		found, complete, err := r.scan(ctx, name, o.since, o.want)
		if err != nil {
			return publish, stored, err
		}
		for _, e := range o.events {
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
	return publish, stored, nil
}

// scan reads the ids of the messages stream took since since (headers
// only, through an ephemeral consumer) and reports which of want it holds,
// and whether it read every message up to the scan's start.
func (r *Relay) scan(ctx context.Context, stream string, since time.Time, want map[string]bool) (map[string]bool, bool, error) {
	cons, err := r.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
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
		batch, err := cons.Fetch(int(min(pending-read, 1000)), jetstream.FetchMaxWait(r.cfg.PublishWait))
		if err != nil {
			return nil, false, fmt.Errorf("reading stream %s for outcomes already stored: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if id := m.Headers().Get(jetstream.MsgIDHeader); want[id] {
				found[id] = true
			}
		}
		if err := batch.Error(); err != nil {
			return nil, false, fmt.Errorf("reading stream %s for outcomes already stored: %w", stream, err)
		}
		if n == 0 {
			break // the rest went meanwhile (the stream's limits)
		}
		read += uint64(n)
	}
	return found, true, nil
}
