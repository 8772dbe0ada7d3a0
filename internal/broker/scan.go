package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IDScan reads which message ids (Nats-Msg-Id) a stream holds. JetStream
// has no index by message id beyond the duplicate window, so the relay
// (rows older than that window) and the consumer (requests whose inbox row
// may have been lost) read the stream's headers instead.
type IDScan struct {
	Stream string
	// Since starts the scan at the first message stored at or after it,
	// unless AfterSeq is set.
	Since time.Time
	// AfterSeq, when not 0, starts the scan at the message after it.
	AfterSeq uint64
	// Max bounds the messages read; 0 reads up to the end.
	Max uint64
	// Wait bounds each call to the server.
	Wait time.Duration
}

// IDScanResult says how far a scan went.
type IDScanResult struct {
	// Read is how many messages were read; LastSeq is the stream sequence
	// of the last one (0 when none was).
	Read, LastSeq uint64
	// Complete reports that the scan read every message the stream held
	// from its start up to the scan's own start (or was stopped by its
	// callback), rather than stopping at Max.
	Complete bool
}

// ScanIDs reads the ids of a stream's messages from s's start up to the
// last message stored when the scan began (headers only, through an
// ephemeral consumer deleted afterwards) and calls fn with the sequence and
// id of each, until fn returns false.
func ScanIDs(ctx context.Context, js jetstream.JetStream, s IDScan, fn func(seq uint64, id string) (more bool)) (IDScanResult, error) {
	r, err := OpenIDReader(ctx, js, s)
	if err != nil {
		return IDScanResult{}, err
	}
	defer r.Close(ctx)
	return r.Read(ctx, s.Max, fn)
}

// IDReader reads a stream's message ids from a start, and then goes on
// from where it stopped, through one ephemeral consumer (headers only):
// a reader used again and again costs a fetch, not a consumer's creation
// and deletion. It is not safe for concurrent use.
type IDReader struct {
	js     jetstream.JetStream
	stream string
	wait   time.Duration
	cons   jetstream.Consumer
	name   string
	// start is the pending count the consumer had when created, used by
	// the first Read; later ones ask the server.
	start   uint64
	started bool
}

// OpenIDReader creates the reader's consumer at s's start.
func OpenIDReader(ctx context.Context, js jetstream.JetStream, s IDScan) (*IDReader, error) {
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &s.Since,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	}
	if s.AfterSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, s.AfterSeq+1
	}
	cctx, cancel := context.WithTimeout(ctx, s.Wait)
	cons, err := js.CreateConsumer(cctx, s.Stream, cfg)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("reading the ids of stream %s: %w", s.Stream, err)
	}
	info := cons.CachedInfo()
	return &IDReader{js: js, stream: s.Stream, wait: s.Wait, cons: cons, name: info.Name, start: info.NumPending}, nil
}

// Read reads the ids from where the last Read stopped (the reader's start
// for the first) up to the last message stored when it began, or max
// messages (0: no bound), and calls fn with each until fn returns false.
// After an error the reader is to be closed: where it stands is unknown.
func (r *IDReader) Read(ctx context.Context, max uint64, fn func(seq uint64, id string) (more bool)) (IDScanResult, error) {
	var res IDScanResult
	pending := r.start // the messages from the start to the end, as the consumer began
	if r.started {
		ictx, cancel := context.WithTimeout(ctx, r.wait)
		info, err := r.cons.Info(ictx)
		cancel()
		if err != nil {
			return res, fmt.Errorf("reading the ids of stream %s: %w", r.stream, err)
		}
		pending = info.NumPending
	}
	r.started = true
	for res.Read < pending {
		if max > 0 && res.Read >= max {
			return res, nil
		}
		n := min(pending-res.Read, 1000)
		if max > 0 {
			n = min(n, max-res.Read)
		}
		got, stop, err := fetchIDs(ctx, r.cons, int(n), r.wait, &res, fn)
		if err != nil {
			return res, fmt.Errorf("reading the ids of stream %s: %w", r.stream, err)
		}
		if stop || got == 0 {
			// Stopped by fn, or the rest went meanwhile (the stream's limits).
			break
		}
	}
	res.Complete = true
	return res, nil
}

// Close deletes the reader's consumer (else it goes after a minute unused).
func (r *IDReader) Close(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = r.js.DeleteConsumer(dctx, r.stream, r.name)
}

// fetchIDs fetches up to n messages from cons within wait and ctx.
func fetchIDs(ctx context.Context, cons jetstream.Consumer, n int, wait time.Duration, res *IDScanResult,
	fn func(uint64, string) bool) (got int, stop bool, err error) {
	fctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, false, err
	}
	for m := range batch.Messages() {
		got++
		res.Read++
		var seq uint64
		if meta, err := m.Metadata(); err == nil {
			seq = meta.Sequence.Stream
			res.LastSeq = seq
		}
		if !stop && !fn(seq, m.Headers().Get(jetstream.MsgIDHeader)) {
			stop = true // the rest of the batch is drained, not read
		}
	}
	return got, stop, batch.Error()
}
