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
	// ReasonBankRejected: MBanq refused the order; card.failed carries the
	// bank's error code.
	ReasonBankRejected = "bank_rejected"
	// ReasonRetriesExhausted: transient failures (bank or network) persisted
	// past the retry budget.
	ReasonRetriesExhausted = "retries_exhausted"
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
