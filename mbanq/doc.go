// Package mbanq is a client for the MBanq Cloud core-banking API (a Fineract
// derivative), limited to what cardbridge needs: OAuth tokens, self-service
// user provisioning, clients, card products and card orders.
//
// A Client holds the connection settings shared by every user: base URL,
// tenant, OAuth client credentials, HTTP transport, retry policy and logger.
// Calls are made through a Session, obtained with Client.As, which acts as one
// MBanq user (the NeoBank's admin or a self-service user) and owns that user's
// token cache.
//
// Reliability rules the package follows, so callers do not have to:
//
//   - Every request carries the tenantId header, an Authorization bearer token
//     (except the token request itself) and a trace-id header; the response's
//     x-request-id is kept in errors and logs.
//   - Every POST carries an Idempotency-Key supplied by the caller for the
//     logical operation and reused on every retry, so a retry after a lost
//     response does not create a second user or card.
//   - Network errors, timeouts, 5xx and 429 answers are retried inside the
//     client with capped exponential backoff and jitter (honouring
//     Retry-After), waiting in a select on the context.
//   - Every attempt, token requests included, passes the Client's adaptive
//     limiter (limiter.go): the tenant's calls are paced by what MBanq
//     answers (429, 503, Retry-After, failures, answer times), so that a
//     tenant's rate limit is used without a retry storm, and a bank back
//     from an outage is met by a ramp rather than the whole backlog.
//   - A 425 (an earlier request under the same Idempotency-Key is still at
//     work) is an unknown outcome, never a refusal: it is asked again under
//     the same key.
//   - A 401 on a call invalidates the cached token and retries the call once.
//   - Every failure is an *Error; Classify turns it into the action a caller
//     should take (retry later, re-authenticate, give up, or stop because the
//     context ended).
//   - Passwords, client secrets and tokens are secret.String values; they are
//     revealed only where they are written to the wire and never appear in
//     logs or error strings.
package mbanq
