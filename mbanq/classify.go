package mbanq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
)

// Class is what a caller should do about an error. It is the one vocabulary
// for bank errors: callers decide on the class, never on statuses or codes.
type Class int

const (
	// ClassNone is the class of a nil error.
	ClassNone Class = iota
	// ClassRetry: MBanq failed without acting (500, 503, 429, 408).
	// Retry later with the same Idempotency-Key. RetryAfter may say when.
	ClassRetry
	// ClassUnknown: the request may have reached MBanq and been acted on,
	// but its answer was not learnt: the attempt timed out or the
	// connection was lost after the request was sent, a gateway answered
	// 502 or 504, a 2xx answer could not be read (or lacked what it must
	// carry), or MBanq answered 425 (an earlier request under the same
	// Idempotency-Key is still being processed, and may yet succeed). Only a retry under the same Idempotency-Key can tell
	// whether the operation happened; a new key could do it twice.
	ClassUnknown
	// ClassReauth: MBanq did not accept the credentials (401) even after the
	// client fetched a fresh token. The stored password may be stale.
	ClassReauth
	// ClassConfig: a fault of the deployment, not of the request: the
	// tenant or the OAuth client is not known to MBanq, a user lacks the
	// permission for the call, MBanq cannot be reached at all (nothing was
	// sent) or its TLS certificate is not trusted, or it answered with a
	// redirect. Every request would fail the same way until an operator
	// acts; ConfigFault names which.
	ClassConfig
	// ClassPermanent: MBanq refused the request (400, 403, 404, other 4xx),
	// or the error did not come from MBanq at all. Repeating it will not
	// help.
	ClassPermanent
	// ClassCanceled: the caller's context was cancelled or reached its
	// deadline. Whether MBanq acted is not known; the caller is usually
	// shutting down and should leave the work to be redelivered, never
	// count it as a failure of the request.
	ClassCanceled
)

// String returns the class name used in logs and metrics.
func (c Class) String() string {
	switch c {
	case ClassNone:
		return "none"
	case ClassRetry:
		return "retry"
	case ClassUnknown:
		return "unknown"
	case ClassReauth:
		return "reauth"
	case ClassConfig:
		return "config"
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
	http.StatusBadRequest:   ClassPermanent,
	http.StatusUnauthorized: ClassReauth,
	http.StatusForbidden:    ClassPermanent,
	http.StatusNotFound:     ClassPermanent,
	// A conflict on a POST is what idempotency layers answer for a key
	// still being processed or used with another body: not a refusal of
	// the operation, which may have happened.
	http.StatusConflict:            ClassUnknown,
	http.StatusUnprocessableEntity: ClassPermanent,
	http.StatusRequestTimeout:      ClassRetry,
	// An earlier request under the same key is still being processed
	// (Fineract): it may yet create what was asked, so the answer is not
	// a refusal and nothing may be ordered under a new key. Retry later
	// under the same key to learn its outcome.
	http.StatusTooEarly:        ClassUnknown,
	http.StatusTooManyRequests: ClassRetry,
	// A gateway's answer says nothing of what the bank behind it did.
	http.StatusBadGateway:     ClassUnknown,
	http.StatusGatewayTimeout: ClassUnknown,
}

// codeClasses overrides statusClasses for answers whose code says more than
// their status. The codes are Fineract's, and OAuth2's (RFC 6749) for the
// token endpoint, as MBanq's API documentation lists them.
var codeClasses = map[string]Class{
	// A wrong tenant is a configuration error; new tokens will not fix it.
	CodeInvalidTenant: ClassConfig,
	// The OAuth client (MBANQ_CLIENT_ID/SECRET) is not accepted.
	CodeInvalidClient:      ClassConfig,
	CodeUnauthorizedClient: ClassConfig,
	CodeNotAuthorized:      ClassConfig, // a user of ours lacks a permission
	CodeMalformedResponse:  ClassUnknown,
	// An answer past its cap was not read: whatever it said (a success, a
	// refusal) is unknown.
	CodeAnswerTooLarge: ClassUnknown,
	// The key was used with another body (the binding changed between two
	// tries, say): whatever the first try did stands, unknown to us.
	CodeIdempotencyKeyReused: ClassUnknown,
	// The user's own credentials, not the request: a fresh login or a new
	// password may fix them.
	CodeInvalidGrant:     ClassReauth,
	CodePasswordOutdated: ClassReauth,
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
	case status >= 300:
		// A redirect where JSON was expected: MBANQ_BASE_URL points at
		// the wrong place. It is never followed (see defaultHTTPClient).
		return ClassConfig
	}
	// A 1xx answer where JSON was expected: not something to retry.
	return ClassPermanent
}

// errAttemptTimeout marks an attempt that hit Config.RequestTimeout while the
// caller's context was still alive. It deliberately does not wrap
// context.DeadlineExceeded, so that it is classified as ClassUnknown rather
// than ClassCanceled.
var errAttemptTimeout = errors.New("attempt timed out")

// Classify returns what a caller should do about err; see Class. Any error
// wrapping an *Error with a status is classified by its HTTP status and
// code; one whose earlier attempts left the outcome unknown stays
// ClassUnknown until a definite answer; an error wrapping context.Canceled
// or context.DeadlineExceeded is ClassCanceled; a failure to connect or
// to trust the bank's certificate is ClassConfig; other network errors are
// ClassUnknown; everything else is ClassPermanent.
func Classify(err error) Class {
	if err == nil {
		return ClassNone
	}
	var e *Error
	if errors.As(err, &e) && e.HTTPStatus != 0 {
		c := classOfStatus(e.HTTPStatus, e.Code)
		if c == ClassRetry && e.OutcomeUnknown {
			return ClassUnknown
		}
		return c
	}
	switch {
	case errors.Is(err, errBankPaused), errors.Is(err, errBankBusy):
		// Not sent: the bank asked for a pause longer than a call waits,
		// or its pace had no room within the wait.
		return ClassRetry
	case errors.Is(err, errAttemptTimeout):
		return ClassUnknown
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return ClassCanceled
	}
	if ConfigFault(err) != "" {
		return ClassConfig
	}
	var ne net.Error
	if errors.As(err, &ne) || (e != nil && e.HTTPStatus == 0) {
		// The request may have been sent before the connection failed.
		return ClassUnknown
	}
	return ClassPermanent
}

// Faults of the deployment, as ConfigFault names them. They are stable
// codes: logs, /readyz and the cardbridge_consumer_paused metric use them.
const (
	FaultInvalidTenant  = "invalid_tenant"
	FaultOAuthClient    = "oauth_client_refused"
	FaultNotAuthorized  = "permission_missing"
	FaultUnreachable    = "bank_unreachable"
	FaultTLS            = "bank_tls"
	FaultRedirect       = "bank_redirect"
	faultConfigFallback = "bank_configuration"
)

// ConfigFault names the fault of the deployment behind err (one of the
// Fault* codes), or returns "" when err is not one.
func ConfigFault(err error) string {
	var e *Error
	if errors.As(err, &e) && e.HTTPStatus != 0 {
		if classOfStatus(e.HTTPStatus, e.Code) != ClassConfig {
			return ""
		}
		switch {
		case e.Code == CodeInvalidTenant:
			return FaultInvalidTenant
		case e.Code == CodeInvalidClient, e.Code == CodeUnauthorizedClient:
			return FaultOAuthClient
		case e.Code == CodeNotAuthorized:
			return FaultNotAuthorized
		case e.HTTPStatus >= 300 && e.HTTPStatus < 400:
			return FaultRedirect
		}
		return faultConfigFallback
	}
	var (
		certInvalid  x509.CertificateInvalidError
		unknownAuth  x509.UnknownAuthorityError
		hostname     x509.HostnameError
		verification *tls.CertificateVerificationError
		record       tls.RecordHeaderError
	)
	if errors.As(err, &certInvalid) || errors.As(err, &unknownAuth) || errors.As(err, &hostname) ||
		errors.As(err, &verification) || errors.As(err, &record) {
		return FaultTLS
	}
	if unreachable(err) {
		return FaultUnreachable
	}
	return ""
}

// unreachable reports a failure to connect at all: nothing was sent, so
// nothing happened at the bank.
func unreachable(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryInCall reports whether a failed attempt is worth another attempt
// within the same call: a transient failure, an unknown outcome (retried
// under the same Idempotency-Key, which finds out), or a failed connection,
// which may be a blip.
func retryInCall(err error) bool {
	if errors.Is(err, errBankBusy) {
		// It waited its turn already: the request goes back, with its
		// retry delay, rather than waiting again here.
		return false
	}
	switch Classify(err) {
	case ClassRetry, ClassUnknown:
		return true
	case ClassConfig:
		return unreachable(err)
	}
	return false
}
