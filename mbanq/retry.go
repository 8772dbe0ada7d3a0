package mbanq

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// call runs one logical call: it gets a token, makes attempts until one
// succeeds or the failure is not worth another, and decodes the answer into
// out.
//
// Retried, up to MaxAttempts: failures of class ClassRetry (no answer, per-
// attempt timeout, 5xx, 429). This is safe for every method the package
// uses: GET and PUT are idempotent, and a POST carries the same
// Idempotency-Key on every attempt, so MBanq answers a repeat from its cache.
//
// Retried once, without counting as an attempt: a 401 on a call made with a
// cached token, after invalidating that token (it may have been revoked or
// have expired early).
func (s *Session) call(ctx context.Context, r request, out any) error {
	body, contentType, err := r.encode()
	if err != nil {
		return err
	}
	if r.method == http.MethodPost && r.idemKey == "" {
		// Still protects this call's own retries; callers that can retry
		// across processes must pass a key derived from their request.
		r.idemKey = uuid.NewString()
	}
	traceID := uuid.NewString()
	c := s.c
	reauthed := false
	// unknown: an attempt may have been acted on without its answer being
	// learnt. A later transient failure does not settle it; only a
	// definite answer (a success, a refusal) does.
	unknown := false
	for attempt := 1; ; attempt++ {
		var token secret.String
		err = nil
		if !r.public {
			token, err = s.tokens.get(ctx, r.op)
		}
		if err == nil {
			err = c.exchange(ctx, &r, body, contentType, token, traceID, attempt, out)
			if err == nil {
				return nil
			}
			if Classify(err) == ClassReauth && !token.IsZero() && !reauthed {
				reauthed = true
				s.tokens.invalidate(token)
				attempt--
				c.log.LogAttrs(ctx, slog.LevelInfo, "mbanq token refused, renewing it",
					slog.String("op", r.op), slog.String("user", s.creds.Username), slog.String("request_id", requestIDOf(err)))
				continue
			}
		}
		if r.method != http.MethodGet && OutcomeUnknown(err) {
			unknown = true
		}
		if !retryInCall(err) || attempt >= c.cfg.MaxAttempts {
			return markUnknown(err, unknown)
		}
		wait, ok := c.backoff(attempt, RetryAfter(err))
		if !ok {
			// MBanq asked for a longer pause than a call should hold a
			// worker; the caller sees RetryAfter on the error.
			return markUnknown(err, unknown)
		}
		c.log.LogAttrs(ctx, slog.LevelWarn, "mbanq call failed, retrying",
			slog.String("op", r.op),
			slog.Int("attempt", attempt),
			slog.Duration("wait", wait),
			slog.String("reason", retryReason(err)),
			slog.String("request_id", requestIDOf(err)),
		)
		if werr := sleep(ctx, wait); werr != nil {
			return &Error{Op: r.op, Err: werr}
		}
	}
}

// markUnknown returns the last error of a call whose earlier attempts left
// the outcome unknown (Error.OutcomeUnknown): a transient failure then
// classifies as ClassUnknown, and a refusal keeps its class but says that
// something may have happened before it.
func markUnknown(err error, unknown bool) error {
	var e *Error
	if !unknown || !errors.As(err, &e) || e.OutcomeUnknown {
		return err
	}
	cp := *e
	cp.OutcomeUnknown = true
	return &cp
}

// backoff returns how long to wait after the given failed attempt: the
// Retry-After MBanq asked for, or a capped exponential delay with jitter.
// ok is false when Retry-After exceeds MaxRetryAfter.
func (c *Client) backoff(attempt int, retryAfter time.Duration) (wait time.Duration, ok bool) {
	if retryAfter > 0 {
		if retryAfter > c.cfg.MaxRetryAfter {
			return 0, false
		}
		return retryAfter, true
	}
	d := c.cfg.BaseBackoff
	for i := 1; i < attempt && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	if d <= 0 {
		return 0, true
	}
	// "Equal jitter": at least half the delay, so backoff still grows, and a
	// random rest, so that callers failing together do not retry together.
	return d/2 + rand.N(d/2+1), true
}

// sleep waits for d or until ctx ends, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retryReason says in a word or two why a failure is retried, for logs.
func retryReason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		switch {
		case e.HTTPStatus == http.StatusTooManyRequests:
			return "rate limited"
		case errors.Is(err, errBankPaused):
			return "bank asked for a pause"
		case errors.Is(err, errBankBusy):
			return "no room at the bank's pace"
		case e.HTTPStatus >= 500:
			return "server error " + http.StatusText(e.HTTPStatus)
		case errors.Is(err, errAttemptTimeout):
			return "attempt timed out"
		case e.HTTPStatus == 0 && e.Err != nil:
			return "no answer: " + e.Err.Error()
		}
	}
	return Classify(err).String()
}

func requestIDOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.RequestID
	}
	return ""
}
