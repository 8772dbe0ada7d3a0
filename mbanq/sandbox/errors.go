package sandbox

import (
	"fmt"
	"net/http"
	"strconv"
)

// This file is the one place that decides the sandbox's error answers: their
// Fineract shape, status codes and codes.
//
// Choices where MBanq's behaviour is not documented:
//   - The token endpoint refuses a wrong client_id or client_secret as
//     Spring Security OAuth2 (which Fineract uses) does, in the RFC 6749
//     format: 401 {"error":"invalid_client","error_description":"Bad client
//     credentials"}, so that a misconfigured OAuth client can be told from
//     a wrong password. Its other failures are in the Fineract format: 401
//     error.msg.not.authenticated for a wrong user, password or refresh
//     token; 400 for a missing field or grant type.
//   - A self-service user asking for a client, card or account outside its
//     scope gets 404, as Fineract's self-service API does, so that the
//     existence of other customers' data is not revealed.
//   - An Idempotency-Key reused with a different body gets
//     422 error.msg.idempotency.key.reused (StatusIdempotencyConflict), as
//     the IETF Idempotency-Key draft recommends; the client classifies it as
//     permanent, since it means a bug in how keys are derived.
//   - Injected faults answer 5xx (ServerErrorStatus, 500 by default) and 429
//     error.msg.rate.limit.exceeded with a Retry-After header.

// StatusIdempotencyConflict is the status of a request that reuses an
// Idempotency-Key with a different body.
const StatusIdempotencyConflict = http.StatusUnprocessableEntity

// apiError is a Fineract error answer.
type apiError struct {
	status int
	body   errorBody
}

type errorBody struct {
	DeveloperMessage             string       `json:"developerMessage"`
	HTTPStatusCode               string       `json:"httpStatusCode"`
	DefaultUserMessage           string       `json:"defaultUserMessage"`
	UserMessageGlobalisationCode string       `json:"userMessageGlobalisationCode"`
	Errors                       []fieldError `json:"errors"`
}

type fieldError struct {
	DeveloperMessage             string     `json:"developerMessage"`
	DefaultUserMessage           string     `json:"defaultUserMessage"`
	UserMessageGlobalisationCode string     `json:"userMessageGlobalisationCode"`
	ParameterName                string     `json:"parameterName"`
	Value                        any        `json:"value"`
	Args                         []argValue `json:"args"`
}

type argValue struct {
	Value any `json:"value"`
}

func newError(status int, code, message string, errs ...fieldError) *apiError {
	if errs == nil {
		errs = []fieldError{}
	}
	return &apiError{status: status, body: errorBody{
		DeveloperMessage:             message,
		HTTPStatusCode:               strconv.Itoa(status),
		DefaultUserMessage:           message,
		UserMessageGlobalisationCode: code,
		Errors:                       errs,
	}}
}

// field builds one entry of errors[]. value is echoed unless the parameter
// is a password.
func field(code, param string, value any, message string, args ...any) fieldError {
	if param == "password" || param == "repeatPassword" {
		value = nil
	}
	as := make([]argValue, len(args))
	for i, a := range args {
		as[i] = argValue{Value: a}
	}
	return fieldError{
		DeveloperMessage:             message,
		DefaultUserMessage:           message,
		UserMessageGlobalisationCode: code,
		ParameterName:                param,
		Value:                        value,
		Args:                         as,
	}
}

func errValidation(errs ...fieldError) *apiError {
	e := newError(http.StatusBadRequest, "validation.msg.validation.errors.exist", "Validation errors exist.", errs...)
	e.body.DeveloperMessage = "The request was invalid. This typically will happen due to validation errors which are provided."
	return e
}

func errUnsupportedParameters(names []string) *apiError {
	errs := make([]fieldError, len(names))
	for i, n := range names {
		msg := fmt.Sprintf("The parameter %s is not supported.", n)
		errs[i] = field("error.msg.parameter.unsupported", n, nil, msg, n)
	}
	return errValidation(errs...)
}

func errMalformedJSON(detail string) *apiError {
	return errValidation(field("validation.msg.invalid.json", "body", nil, "The request body is not valid JSON: "+detail))
}

func errNotAuthenticated(developerMessage string) *apiError {
	e := newError(http.StatusUnauthorized, "error.msg.not.authenticated", "Unauthenticated. Please login.")
	e.body.DeveloperMessage = developerMessage
	return e
}

func errInvalidTenant() *apiError {
	return newError(http.StatusUnauthorized, "error.msg.invalid.tenant.identifier", "Invalid tenant identifier provided with request.")
}

func errNotAuthorized(what string) *apiError {
	return newError(http.StatusForbidden, "error.msg.not.authorized", "User has no authority to "+what+".")
}

// errNotFound mirrors the example in MBanq's API documentation: a generic top-level code
// and the specific one in errors[].
func errNotFound(entity, code string, id any) *apiError {
	msg := fmt.Sprintf("%s with identifier %v does not exist", entity, id)
	e := newError(http.StatusNotFound, "error.msg.resource.not.found", msg,
		field(code, "id", nil, msg, id))
	return e
}

// errDomainRule is a 403 for a rule of the business domain (inactive client
// or product, account of another client...).
func errDomainRule(code, message string, param string, value any) *apiError {
	e := newError(http.StatusForbidden, code, message, field(code, param, value, message, value))
	return e
}

func errDuplicateUsername(username string) *apiError {
	msg := fmt.Sprintf("User with username %s already exists.", username)
	e := newError(http.StatusForbidden, "error.msg.user.duplicate.username", msg,
		field("error.msg.user.duplicate.username", "username", username, msg, username))
	e.body.DeveloperMessage = "The request caused a data integrity issue to be fired by the database."
	return e
}

func errIdempotencyConflict() *apiError {
	return newError(StatusIdempotencyConflict, "error.msg.idempotency.key.reused",
		"The Idempotency-Key was already used with a different request body.")
}

// errTooEarly answers a repeat of a request whose Idempotency-Key is still
// being processed [fineract].
func errTooEarly() *apiError {
	return newError(http.StatusTooEarly, "error.msg.idempotency.key.in.progress",
		"A request with this Idempotency-Key is still being processed; retry later.")
}

func errRateLimited() *apiError {
	return newError(http.StatusTooManyRequests, "error.msg.rate.limit.exceeded", "Too many requests. Please retry later.")
}

func errServer(status int) *apiError {
	return newError(status, "error.msg.platform.server.side.error",
		"An unexpected error occured on the platform server.")
}

// oauthError is an RFC 6749 (section 5.2) error answer of the token
// endpoint; it is not in the Fineract format.
type oauthError struct {
	status int
	body   oauthErrorBody
}

type oauthErrorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// errInvalidClient is Spring Security OAuth2's answer to a wrong client_id
// or client_secret.
func errInvalidClient() *oauthError {
	return &oauthError{status: http.StatusUnauthorized, body: oauthErrorBody{Error: "invalid_client", ErrorDescription: "Bad client credentials"}}
}

func errRouteNotFound(path string) *apiError {
	return newError(http.StatusNotFound, "error.msg.resource.not.found", "The requested resource "+path+" does not exist.")
}
