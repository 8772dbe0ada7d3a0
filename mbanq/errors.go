package mbanq

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Codes (userMessageGlobalisationCode) the package and its callers act on.
const (
	CodeDuplicateUsername     = "error.msg.user.duplicate.username"
	CodeNotAuthenticated      = "error.msg.not.authenticated"
	CodeInvalidTenant         = "error.msg.invalid.tenant.identifier"
	CodeNotAuthorized         = "error.msg.not.authorized"
	CodeResourceNotFound      = "error.msg.resource.not.found"
	CodeValidationErrorsExist = "validation.msg.validation.errors.exist"
	CodeDomainRuleViolation   = "validation.msg.domain.rule.violation"

	// OAuth2 (RFC 6749 section 5.2) codes of the token endpoint, read from
	// its "error" field: the client id or secret is not accepted, or the
	// user's credentials are not.
	CodeInvalidClient      = "invalid_client"
	CodeUnauthorizedClient = "unauthorized_client"
	CodeInvalidGrant       = "invalid_grant"

	// CodeClientIDInvalid names a client the bank does not have (in the
	// errors of a 404).
	CodeClientIDInvalid = "error.msg.client.id.invalid"
	// CodePasswordOutdated: the user's password expired; every call but an
	// update of the user is refused with it [fineract].
	CodePasswordOutdated = "error.msg.password.outdated"
	// CodeIdempotencyKeyReused: the Idempotency-Key was used before with
	// another body. MBanq's code for it is [unknown]; this is the
	// sandbox's, which follows Fineract's naming.
	CodeIdempotencyKeyReused = "error.msg.idempotency.key.reused"

	// CodeMalformedResponse is set by this package, not by MBanq, when a
	// successful answer cannot be decoded.
	CodeMalformedResponse = "mbanq.client.malformed.response"
	// CodeAnswerTooLarge is set by this package when an answer exceeds the
	// cap of its call; it is not read further.
	CodeAnswerTooLarge = "mbanq.client.answer.too.large"
)

// Error is the one error type of the package. It describes an answer of
// MBanq that was not a success (HTTPStatus != 0), or a call that got no
// answer (HTTPStatus == 0, Err holds the cause).
//
// Its Error string holds the operation, status, code and user message but
// never a request or response body, so it carries no password or token.
type Error struct {
	// Op is what the client was doing, e.g. "order card".
	Op string
	// HTTPStatus is the response status, 0 when there was no response.
	HTTPStatus int
	// Code is the Fineract userMessageGlobalisationCode (or the OAuth2
	// "error" field), e.g. error.msg.user.duplicate.username.
	Code string
	// Message is the defaultUserMessage.
	Message string
	// DeveloperMessage is the developerMessage, or the start of a non-JSON
	// body. It is not part of the Error string.
	DeveloperMessage string
	// Errors lists the per-parameter errors of a validation failure.
	Errors []FieldError
	// RequestID is the response's x-request-id header.
	RequestID string
	// RetryAfter is the delay asked for by a Retry-After header, if any.
	RetryAfter time.Duration
	// Err is the underlying cause of a failure without a response (network
	// error, timeout, cancelled context) or of an undecodable answer.
	Err error
	// OutcomeUnknown is set on the last error of a call when an earlier
	// attempt of the call may have been acted on without its answer being
	// learnt. A later transient failure does not tell what happened, so it
	// classifies as ClassUnknown; a later refusal is classified by itself,
	// but the caller must not take it as proof that nothing happened (the
	// bank may not have remembered the first attempt under its key).
	OutcomeUnknown bool
	// Login is set on errors of the token endpoint: the user's credentials
	// (or the OAuth client's) were being checked, no API call was made.
	Login bool
}

// FieldError is one entry of the errors array of a Fineract error body.
type FieldError struct {
	Code      string // userMessageGlobalisationCode
	Message   string // defaultUserMessage
	Parameter string // parameterName
	// Value is the offending value as text. It is left empty for parameters
	// that hold secrets (password, repeatPassword...), even if MBanq
	// echoed them.
	Value string
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("mbanq: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.HTTPStatus == 0 {
		if e.Err != nil {
			b.WriteString(e.Err.Error())
		} else {
			b.WriteString("no response")
		}
		return b.String()
	}
	fmt.Fprintf(&b, "HTTP %d", e.HTTPStatus)
	if e.Code != "" {
		b.WriteString(" ")
		b.WriteString(e.Code)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	for i, fe := range e.Errors {
		if i == 0 {
			b.WriteString(" [")
		} else {
			b.WriteString("; ")
		}
		if fe.Parameter != "" {
			b.WriteString(fe.Parameter)
			b.WriteString(": ")
		}
		b.WriteString(fe.Code)
		if i == len(e.Errors)-1 {
			b.WriteString("]")
		}
	}
	if e.RequestID != "" {
		b.WriteString(" (request-id ")
		b.WriteString(e.RequestID)
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// HasCode reports whether err is an *Error whose code, or the code of one of
// its field errors, is code.
func HasCode(err error, code string) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	if e.Code == code {
		return true
	}
	for _, fe := range e.Errors {
		if fe.Code == code {
			return true
		}
	}
	return false
}

// IsDuplicateUsername reports whether err is MBanq refusing to create a user
// because the username is taken (403 error.msg.user.duplicate.username),
// typically because an earlier attempt created it and its answer was lost.
func IsDuplicateUsername(err error) bool { return HasCode(err, CodeDuplicateUsername) }

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.HTTPStatus == http.StatusNotFound
}

// OutcomeUnknown reports whether some attempt of the call that returned err
// may have been acted on by MBanq without its answer being learnt.
func OutcomeUnknown(err error) bool {
	var e *Error
	if errors.As(err, &e) && e.OutcomeUnknown {
		return true
	}
	return Classify(err) == ClassUnknown
}

// RetryAfter returns the delay MBanq asked for before the next attempt
// (Retry-After on a 429 or 503), or 0 when it is not known.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// fineractBody is the error body of Fineract; the OAuth2 fields cover a token
// endpoint that answers in RFC 6749 style instead.
type fineractBody struct {
	DeveloperMessage             string     `json:"developerMessage"`
	HTTPStatusCode               flexString `json:"httpStatusCode"`
	DefaultUserMessage           string     `json:"defaultUserMessage"`
	UserMessageGlobalisationCode string     `json:"userMessageGlobalisationCode"`
	Errors                       []struct {
		DeveloperMessage             string          `json:"developerMessage"`
		DefaultUserMessage           string          `json:"defaultUserMessage"`
		UserMessageGlobalisationCode string          `json:"userMessageGlobalisationCode"`
		ParameterName                string          `json:"parameterName"`
		Value                        json.RawMessage `json:"value"`
	} `json:"errors"`

	OAuthError       string `json:"error"`
	OAuthDescription string `json:"error_description"`
}

// maxSnippet bounds how much of a non-JSON body is kept in DeveloperMessage.
const maxSnippet = 256

// decodeError builds the *Error for a non-2xx answer. It never fails: a body
// that is not Fineract JSON (an HTML page from a proxy, an empty body) still
// yields the status, and the start of the body for diagnosis.
func decodeError(op string, resp *http.Response, body []byte) *Error {
	e := &Error{
		Op:         op,
		HTTPStatus: resp.StatusCode,
		RequestID:  resp.Header.Get("x-request-id"),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	var fb fineractBody
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &fb) == nil {
		e.Code = fb.UserMessageGlobalisationCode
		e.Message = fb.DefaultUserMessage
		e.DeveloperMessage = fb.DeveloperMessage
		if e.Code == "" && fb.OAuthError != "" {
			e.Code = fb.OAuthError
			e.Message = fb.OAuthDescription
		}
		for _, fe := range fb.Errors {
			f := FieldError{
				Code:      fe.UserMessageGlobalisationCode,
				Message:   fe.DefaultUserMessage,
				Parameter: fe.ParameterName,
			}
			if !isSecretParameter(fe.ParameterName) {
				f.Value = rawValueText(fe.Value)
			}
			e.Errors = append(e.Errors, f)
		}
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return e
	}
	e.Message = http.StatusText(resp.StatusCode)
	snippet := string(trimmed)
	if len(snippet) > maxSnippet {
		snippet = snippet[:maxSnippet]
	}
	e.DeveloperMessage = snippet
	return e
}

// isSecretParameter reports parameters whose echoed values must not be kept.
func isSecretParameter(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"password", "secret", "token"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// rawValueText renders a JSON value as text: strings unquoted, null empty.
func rawValueText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// parseRetryAfter reads a Retry-After header: delta-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(secs * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
