package mbanq

import (
	"context"
	"errors"
	"net"
	"net/http"
)

// Class is what a caller should do about an error.
type Class int

const (
	// ClassNone is the class of a nil error.
	ClassNone Class = iota
	// ClassRetry: a transient failure (network error, timeout, 5xx, 429).
	// The outcome of a POST is unknown; retry later with the same
	// Idempotency-Key. RetryAfter may say when.
	ClassRetry
	// ClassReauth: MBanq did not accept the credentials (401) even after the
	// client fetched a fresh token. The stored password may be stale: reset
	// it through the admin session, or give up if that fails too.
	ClassReauth
	// ClassPermanent: MBanq refused the request (400, 403, 404, other 4xx),
	// or the error did not come from MBanq at all. Repeating it will not
	// help.
	ClassPermanent
	// ClassCanceled: the caller's context was cancelled or reached its
	// deadline. Nothing is known about MBanq; the caller is usually shutting
	// down and should leave the work to be redelivered, never count it as a
	// failure of the request.
	ClassCanceled
)

// String returns the class name used in logs and metrics.
func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassRetry:
		return "retry"
	case ClassReauth:
		return "reauth"
	case ClassPermanent:
		return "permanent"
	case ClassCanceled:
		return "canceled"
	}
	return "unknown"
}

// statusClasses is the one table from an HTTP status to a Class. Statuses
// not listed fall back to ClassRetry for 5xx and ClassPermanent for 4xx
// (see classOfStatus); codeClasses overrides it for particular codes.
var statusClasses = map[int]Class{
	http.StatusBadRequest:          ClassPermanent,
	http.StatusUnauthorized:        ClassReauth,
	http.StatusForbidden:           ClassPermanent,
	http.StatusNotFound:            ClassPermanent,
	http.StatusConflict:            ClassPermanent,
	http.StatusUnprocessableEntity: ClassPermanent,
	http.StatusRequestTimeout:      ClassRetry,
	http.StatusTooEarly:            ClassRetry,
	http.StatusTooManyRequests:     ClassRetry,
}

// codeClasses overrides statusClasses for answers whose code says more than
// their status.
var codeClasses = map[string]Class{
	// A wrong tenant is a configuration error; new tokens will not fix it.
	CodeInvalidTenant: ClassPermanent,
}

func classOfStatus(status int, code string) Class {
	if c, ok := codeClasses[code]; ok {
		return c
	}
	if c, ok := statusClasses[status]; ok {
		return c
	}
	switch {
	case status >= 500:
		return ClassRetry
	case status >= 400:
		return ClassPermanent
	}
	// A 1xx or 3xx answer where JSON was expected: not something to retry.
	return ClassPermanent
}

// errAttemptTimeout marks an attempt that hit Config.RequestTimeout while the
// caller's context was still alive. It deliberately does not wrap
// context.DeadlineExceeded, so that it is classified as ClassRetry rather
// than ClassCanceled.
var errAttemptTimeout = errors.New("attempt timed out")

// Classify returns what a caller should do about err; see Class. Any error
// wrapping an *Error is classified by its HTTP status and code, an error
// wrapping context.Canceled or context.DeadlineExceeded is ClassCanceled,
// network errors are ClassRetry, and everything else is ClassPermanent.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	var e *Error
	if errors.As(err, &e) && e.HTTPStatus != 0 {
		if e.Code == CodeMalformedResponse {
			return ClassPermanent
		}
		return classOfStatus(e.HTTPStatus, e.Code)
	}
	switch {
	case errors.Is(err, errAttemptTimeout):
		return ClassRetry
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ClassCanceled
	}
	var ne net.Error
	if errors.As(err, &ne) || (e != nil && e.HTTPStatus == 0) {
		// No answer at all (refused, reset, EOF, DNS): transient.
		return ClassRetry
	}
	return ClassPermanent
}
