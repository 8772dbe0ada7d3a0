package event

// Reasons a request fails, as they appear in DecodeError.Reason and in the
// reason field of card.failed. They are a public contract: subscribers branch
// on them, so a code is never renamed or reused for something else.
// schemas/card.failed.json lists the same codes; a test keeps the two equal.
const (
	// ReasonInvalidEvent: the message is not a well-formed CloudEvent
	// (not JSON, required attribute missing, malformed header, too large...).
	ReasonInvalidEvent = "invalid_event"
	// ReasonUnsupportedEvent: a well-formed CloudEvent that cardbridge does
	// not process: another type, a spec version other than 1.0, data that is
	// not JSON.
	ReasonUnsupportedEvent = "unsupported_event"
	// ReasonSchemaInvalid: the data does not match
	// schemas/employee.card.requested.json, or contradicts the subject.
	ReasonSchemaInvalid = "schema_invalid"
	// ReasonUnboundSource: the event source may not order cards for the
	// client named in the data.
	ReasonUnboundSource = "unbound_source"
	// ReasonBankRejected: MBanq definitely refused the order (a business
	// rule, a 4xx); card.failed carries the bank's error code. A replay,
	// once the cause is fixed, orders under a new Idempotency-Key, since the
	// bank remembers the refusal under the old one.
	ReasonBankRejected = "bank_rejected"
	// ReasonRetriesExhausted: the bank kept failing without acting (5xx,
	// 429) for the whole retry budget (CARDBRIDGE_RETRY_FOR). No card was
	// created; a replay orders again under the same Idempotency-Key.
	ReasonRetriesExhausted = "retries_exhausted"
	// ReasonBankOutcomeUnknown: the retry budget ran out while the bank's
	// answer to an order was not known (a timeout, a lost connection, an
	// unreadable answer): a card may exist. A replay asks the bank again
	// under the same Idempotency-Key, so an existing card is found, not
	// ordered a second time.
	ReasonBankOutcomeUnknown = "bank_outcome_unknown"
	// ReasonRequestExpired: the request's CloudEvent time is older than
	// cardbridge keeps its records (CARDBRIDGE_RETENTION, less a day): it
	// could be a request already answered whose record was purged, so it
	// is refused rather than risk a second card. Send a new request (a new
	// id, a current time).
	ReasonRequestExpired = "request_expired"
	// ReasonDuplicateConflict: a request with the same (source, id) but
	// different data was already accepted; the first one stands.
	ReasonDuplicateConflict = "duplicate_conflict"
)

// reasons is the set of known codes, in the order of the schema's enum.
var reasons = []string{
	ReasonInvalidEvent,
	ReasonUnsupportedEvent,
	ReasonSchemaInvalid,
	ReasonUnboundSource,
	ReasonBankRejected,
	ReasonRetriesExhausted,
	ReasonDuplicateConflict,
	ReasonBankOutcomeUnknown,
	ReasonRequestExpired,
}

// Reasons returns every failure reason code, in a fixed order.
func Reasons() []string {
	return append([]string(nil), reasons...)
}

// KnownReason reports whether code is one of the failure reason codes.
func KnownReason(code string) bool {
	for _, r := range reasons {
		if r == code {
			return true
		}
	}
	return false
}
