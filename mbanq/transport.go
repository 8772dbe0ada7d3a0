package mbanq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// Caps on what is read of an answer. An answer past its cap fails the call
// with CodeAnswerTooLarge rather than being cut short or held in memory:
// a bank or proxy that answers with megabytes must not take the process's
// memory, whatever the concurrency.
const (
	// maxAnswer bounds the answer of a call on one resource (a card, a
	// user, a token) and of every error.
	maxAnswer = 64 << 10
	// maxListAnswer bounds a list (roles, card products, users); a tenant's
	// users list is the longest, read only to recover a user.
	maxListAnswer = 8 << 20
)

const userAgent = "cardbridge-mbanq/1"

// request describes one logical call; it is attempted one or more times.
type request struct {
	op     string // what is being done, for errors and logs, e.g. "order card"
	method string
	path   string
	body   any        // encoded as JSON when not nil
	form   url.Values // encoded as a form when not nil (token endpoint)
	// idemKey is the Idempotency-Key of a POST, the same on every attempt.
	idemKey string
	// public marks a call made without a bearer token (the token request).
	public bool
	// list marks a call whose answer is a list, read up to maxListAnswer.
	list bool
}

// answerCap is how much of r's answer may be read.
func (r *request) answerCap() int64 {
	if r.list {
		return maxListAnswer
	}
	return maxAnswer
}

// encode returns the body and its content type, once for all attempts.
func (r *request) encode() ([]byte, string, error) {
	switch {
	case r.form != nil:
		return []byte(r.form.Encode()), "application/x-www-form-urlencoded", nil
	case r.body != nil:
		b, err := json.Marshal(r.body)
		if err != nil {
			// The message names the type that failed, never the data.
			return nil, "", fmt.Errorf("mbanq: %s: encoding request: %w", r.op, err)
		}
		return b, "application/json", nil
	}
	return nil, "", nil
}

// exchange makes one attempt once the adaptive limiter lets it start (see
// limiter.go), and tells the limiter what the answer says of the bank.
func (c *Client) exchange(ctx context.Context, r *request, body []byte, contentType string, token secret.String, traceID string, attempt int, out any) error {
	if c.limiter == nil {
		return c.attempt(ctx, r, body, contentType, token, traceID, attempt, out)
	}
	start, err := c.limiter.acquire(ctx, r.op)
	if err != nil {
		if ctx.Err() != nil {
			return &Error{Op: r.op, Err: ctx.Err()}
		}
		return err
	}
	err = c.attempt(ctx, r, body, contentType, token, traceID, attempt, out)
	c.limiter.release(start, r.op, outcomeOf(err), c.limiter.clk.Now().Sub(start), RetryAfter(err))
	return err
}

// attempt makes one attempt: one HTTP request and its answer, bounded by
// RequestTimeout. A 2xx answer is decoded into out; anything else is an
// *Error.
func (c *Client) attempt(ctx context.Context, r *request, body []byte, contentType string, token secret.String, traceID string, attempt int, out any) error {
	actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()

	var rdr io.Reader
	if body != nil {
		rdr = bytes.NewReader(body)
	}
	// net/http resends a request that carries an Idempotency-Key by itself
	// when a reused connection dies before the answer: safe (same key), but
	// the first send may have been acted on, and that must not be hidden.
	// Each send takes a connection; more than one means a resend.
	var sends atomic.Int32
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { sends.Add(1) }})
	req, err := http.NewRequestWithContext(actx, r.method, c.cfg.BaseURL+r.path, rdr)
	if err != nil {
		return fmt.Errorf("mbanq: %s: building request: %w", r.op, err)
	}
	h := req.Header
	h.Set("tenantId", c.cfg.TenantID)
	h.Set("Accept", "application/json")
	h.Set("User-Agent", userAgent)
	h.Set("trace-id", "RequestUUID="+traceID)
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if !token.IsZero() {
		h.Set("Authorization", "Bearer "+token.Reveal())
	}
	if r.idemKey != "" {
		h.Set("Idempotency-Key", r.idemKey)
	}

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return c.noAnswer(ctx, r, err)
	}
	resent := sends.Load() > 1 && r.method != http.MethodGet
	defer resp.Body.Close()
	limit := r.answerCap()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return c.noAnswer(ctx, r, err)
	}
	requestID := resp.Header.Get("x-request-id")
	if int64(len(data)) > limit {
		// Not read further: closing the body drops the connection.
		return &Error{Op: r.op, HTTPStatus: resp.StatusCode, Code: CodeAnswerTooLarge, RequestID: requestID,
			Message: fmt.Sprintf("the answer is larger than %d bytes", limit), OutcomeUnknown: resent}
	}
	c.log.LogAttrs(ctx, slog.LevelDebug, "mbanq call",
		slog.String("op", r.op),
		slog.String("method", r.method),
		slog.String("path", r.path),
		slog.Int("status", resp.StatusCode),
		slog.String("request_id", requestID),
		slog.String("trace_id", traceID),
		slog.Int("attempt", attempt),
		slog.Bool("served_from_cache", resp.Header.Get("x-served-from-cache") == "true"),
		slog.Duration("elapsed", time.Since(start)),
	)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := decodeError(r.op, resp, data)
		e.OutcomeUnknown = resent
		return e
	}
	if out == nil {
		return nil
	}
	malformed := func(err error) error {
		return &Error{
			Op:         r.op,
			HTTPStatus: resp.StatusCode,
			Code:       CodeMalformedResponse,
			Message:    "cannot read the answer",
			RequestID:  requestID,
			Err:        err,
		}
	}
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return malformed(err)
		}
	}
	// An answer that must name what was done (a card, say) and does not
	// is as unreadable as broken JSON: the operation may have happened.
	if c, ok := out.(interface{ check() error }); ok {
		if err := c.check(); err != nil {
			return malformed(err)
		}
	}
	return nil
}

// noAnswer builds the *Error of an attempt that got no (complete) answer. It
// tells the caller's cancellation apart from our own per-attempt timeout,
// because the first must stop all work and the second is worth a retry.
func (c *Client) noAnswer(ctx context.Context, r *request, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return &Error{Op: r.op, Err: ctxErr}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Op: r.op, Err: fmt.Errorf("%s %s: %w after %s", r.method, r.path, errAttemptTimeout, c.cfg.RequestTimeout)}
	}
	return &Error{Op: r.op, Err: err}
}
