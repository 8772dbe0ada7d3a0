package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cardbridge/cardbridge/internal/broker"
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
	// defaultSpellGap is staleState.spellGap.
	defaultSpellGap = 30 * time.Second
	// lookupWait bounds the lookups of a stream's name and window (a
	// stream without a leader does not answer: the claimed rows wait
	// meanwhile), and lookupRetry is how long a failed one is not tried
	// again.
	lookupWait  = 2 * time.Second
	lookupRetry = 5 * time.Second
	// streamNameTTL is how long the stream of a subject, and its
	// duplicate window, are remembered.
	streamNameTTL = time.Minute
)

var errHeld = errors.New("outcomes older than the duplicate window wait for a check of their stream")

// staleState is what the relay remembers between sweeps for old rows.
type staleState struct {
	holdLimit time.Duration
	// spellGap: failed checks further apart than this are not one spell
	// of failures (sweeps try held rows every few seconds).
	spellGap time.Duration
	// now is the clock of the hold limit and the spell gap (time.Now);
	// tests set another, so that a hold limit passes without waiting.
	now     func() time.Time
	mu      sync.Mutex
	names   map[string]streamName   // by subject
	windows map[string]streamWindow // by stream
	lookups map[string]failedLookup // the last failure of a lookup, by what it looked up
	// failing is, by stream ("" for rows whose stream is unknown), since
	// when its check has failed and when it was last tried.
	failing map[string]failedCheck
}

type streamName struct {
	name string
	read time.Time
}

type failedCheck struct{ since, tried time.Time }

func (r *Relay) streamNameOf(ctx context.Context, subject string) (string, error) {
	r.stale.mu.Lock()
	n, ok := r.stale.names[subject]
	r.stale.mu.Unlock()
	if ok && time.Since(n.read) < streamNameTTL {
		return n.name, nil
	}
	if err := r.recentlyFailed("name " + subject); err != nil {
		return "", err
	}
	name, err := r.js.StreamNameBySubject(ctx, subject)
	if err != nil {
		err = fmt.Errorf("finding the stream of %s: %w", subject, err)
		r.lookupFailedUnlessStopped(ctx, "name "+subject, err)
		return "", err
	}
	r.stale.mu.Lock()
	if r.stale.names == nil {
		r.stale.names = map[string]streamName{}
	}
	r.stale.names[subject] = streamName{name: name, read: time.Now()}
	r.stale.mu.Unlock()
	return name, nil
}

// windowOf is stream's duplicate window. It is read at most once per
// streamNameTTL: a read during a leader election may wait, and the claimed
// rows with it. When a read fails, the window read last is used, if any.
func (r *Relay) windowOf(ctx context.Context, stream string) (time.Duration, error) {
	r.stale.mu.Lock()
	w, ok := r.stale.windows[stream]
	r.stale.mu.Unlock()
	if ok && time.Since(w.read) < streamNameTTL {
		return w.window, nil
	}
	if err := r.recentlyFailed("window " + stream); err != nil && !ok {
		return 0, err
	} else if err != nil {
		return w.window, nil
	}
	st, err := r.js.Stream(ctx, stream)
	switch {
	case err == nil:
		w.window = st.CachedInfo().Config.Duplicates
	case !ok:
		err = fmt.Errorf("reading stream %s: %w", stream, err)
		r.lookupFailedUnlessStopped(ctx, "window "+stream, err)
		return 0, err
	}
	w.read = time.Now()
	r.stale.mu.Lock()
	if r.stale.windows == nil {
		r.stale.windows = map[string]streamWindow{}
	}
	r.stale.windows[stream] = w
	r.stale.mu.Unlock()
	return w.window, nil
}

// recentlyFailed is the error of a lookup that failed less than
// lookupRetry ago, else nil: during an election or an outage each sweep
// would wait out lookupWait again for nothing.
func (r *Relay) recentlyFailed(key string) error {
	r.stale.mu.Lock()
	defer r.stale.mu.Unlock()
	if f, ok := r.stale.lookups[key]; ok && time.Since(f.at) < lookupRetry {
		return f.err
	}
	return nil
}

// errLookupSlow ends lookups that took longer than lookupWait.
var errLookupSlow = errors.New("the stream lookup took too long")

// sweepStopped reports whether ctx ended because its sweep was stopped (its
// lease ended, the process is leaving), not because a lookup was slow: a
// lookup or a scan cut short by that says nothing of the stream.
func sweepStopped(ctx context.Context) bool {
	return ctx.Err() != nil && !errors.Is(context.Cause(ctx), errLookupSlow)
}

// lookupFailedUnlessStopped remembers a failed lookup, unless its sweep was
// stopped.
func (r *Relay) lookupFailedUnlessStopped(ctx context.Context, key string, err error) {
	if !sweepStopped(ctx) {
		r.lookupFailed(key, err)
	}
}

func (r *Relay) lookupFailed(key string, err error) {
	r.stale.mu.Lock()
	defer r.stale.mu.Unlock()
	if r.stale.lookups == nil {
		r.stale.lookups = map[string]failedLookup{}
	}
	r.stale.lookups[key] = failedLookup{at: time.Now(), err: err}
}

type failedLookup struct {
	at  time.Time
	err error
}

type streamWindow struct {
	window time.Duration
	read   time.Time
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
// Each subject's stream and each stream's window are looked up at most
// once per batch, and remembered for streamNameTTL, all within
// lookupWait. A row whose stream or window cannot be
// read is judged by the window cardbridge sets (broker.DuplicateWindow),
// so that young rows go out as they did before this check; the first such
// error is returned with the split.
func (r *Relay) split(ctx context.Context, events []store.OutboxEvent) (young []store.OutboxEvent, old []oldRow, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, min(lookupWait, r.cfg.PublishWait), errLookupSlow)
	defer cancel()
	type lookup struct {
		name   string
		window time.Duration
		err    error
	}
	bySubject := map[string]lookup{}
	windows := map[string]lookup{} // by stream
	for _, e := range events {
		l, done := bySubject[e.Subject]
		if !done {
			l.name, l.err = r.streamNameOf(ctx, e.Subject)
			if l.err == nil {
				w, known := windows[l.name]
				if !known {
					w.name = l.name
					w.window, w.err = r.windowOf(ctx, l.name)
					windows[l.name] = w
				}
				l = w
			}
			if l.err != nil {
				if err == nil {
					err = l.err
				}
				l.name, l.window = "", broker.DuplicateWindow
			}
			bySubject[e.Subject] = l
		}
		if e.Age < l.window*3/4 {
			young = append(young, e)
		} else {
			old = append(old, oldRow{OutboxEvent: e, stream: l.name})
		}
	}
	return young, old, err
}

// screen looks for old rows' events in their streams. It returns the rows
// to publish (not in the stream) and those to delete without publishing
// (in the stream already). The rows of a stream that cannot be read are in
// neither list, and errHeld is returned, until its check has failed for
// the hold limit: from then on they are published unchecked, with a
// warning, and the check is tried again once per hold limit.
func (r *Relay) screen(ctx context.Context, old []oldRow) (publish, stored []store.OutboxEvent, err error) {
	type scanFor struct {
		since time.Time
		want  map[string]bool
		rows  []store.OutboxEvent
	}
	byStream := map[string]*scanFor{}
	var order []string
	now := time.Now()
	for _, e := range old {
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
	for _, name := range order {
		s := byStream[name]
		if r.releasedWithoutTrying(name) {
			publish = append(publish, s.rows...)
			continue
		}
		var (
			found    map[string]bool
			complete bool
			scanErr  = errors.New("its stream is unknown")
		)
		if name != "" {
			found, complete, scanErr = r.scan(ctx, name, s.since, s.want)
		}
		if scanErr != nil && sweepStopped(ctx) {
			// Not the stream found unreadable: this is no failed check.
			err = context.Cause(ctx)
			continue
		}
		if scanErr != nil {
			if !r.checkFailed(name, scanErr, len(s.rows)) {
				err = errHeld
				continue
			}
			publish = append(publish, s.rows...)
			continue
		}
		r.checkSucceeded(name)
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
	return publish, stored, err
}

// releasedWithoutTrying reports whether stream's check has failed for the
// hold limit and was tried less than a hold limit ago: its old rows go out
// unchecked without another try.
func (r *Relay) releasedWithoutTrying(stream string) bool {
	r.stale.mu.Lock()
	defer r.stale.mu.Unlock()
	f, ok := r.stale.failing[stream]
	now := r.stale.now()
	return ok && now.Sub(f.since) >= r.stale.holdLimit && now.Sub(f.tried) < r.stale.holdLimit
}

// checkFailed records a failed check of stream and reports whether its
// rows are to be published unchecked (the check has failed for the hold
// limit).
func (r *Relay) checkFailed(stream string, err error, rows int) (release bool) {
	r.stale.mu.Lock()
	defer r.stale.mu.Unlock()
	if r.stale.failing == nil {
		r.stale.failing = map[string]failedCheck{}
	}
	now := r.stale.now()
	f, ok := r.stale.failing[stream]
	if !ok || now.Sub(f.tried) >= r.stale.spellGap {
		// A new spell of failures: the last failed check was long ago,
		// and its rows went meanwhile (another relay published them,
		// say). The hold limit runs from now, not from then.
		f.since = now
	}
	f.tried = now
	r.stale.failing[stream] = f
	release = now.Sub(f.since) >= r.stale.holdLimit
	if release {
		r.log.Warn("outcomes older than the duplicate window published unchecked: their stream could not be read; JetStream may store second copies",
			"stream", stream, "rows", rows, "failing_for", now.Sub(f.since).Round(time.Second), "err", err)
	} else {
		r.log.Warn("outcomes older than the duplicate window wait: their stream could not be read",
			"stream", stream, "rows", rows, "err", err)
	}
	return release
}

func (r *Relay) checkSucceeded(stream string) {
	r.stale.mu.Lock()
	defer r.stale.mu.Unlock()
	delete(r.stale.failing, stream)
}

// scan reads the ids of the messages stream took since since (headers
// only, broker.ScanIDs) and reports which of want it holds, and whether it
// read every message up to the scan's start.
func (r *Relay) scan(ctx context.Context, stream string, since time.Time, want map[string]bool) (map[string]bool, bool, error) {
	found := map[string]bool{}
	res, err := broker.ScanIDs(ctx, r.js, broker.IDScan{Stream: stream, Since: since, Max: maxScan, Wait: r.cfg.PublishWait},
		func(_ uint64, id string) bool {
			if want[id] {
				found[id] = true
			}
			return len(found) < len(want)
		})
	if err != nil {
		return nil, false, fmt.Errorf("looking for outcomes already stored: %w", err)
	}
	return found, res.Complete, nil
}
