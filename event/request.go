package event

import (
	"strconv"
	"time"
)

// Request is a decoded and validated employee.card.requested event.
type Request struct {
	// ID and Source are the CloudEvent id and source; together they are the
	// idempotency key of the request.
	ID, Source string
	// Subject is the employee id: the event's subject, or data.employee.id
	// when the event has no subject (Decode rejects the two differing).
	Subject string
	// Type is always TypeCardRequested on a decoded request.
	Type string
	// Time is the event's time attribute; zero when the producer set none.
	Time time.Time
	// TraceParent and TraceState are the W3C trace context (CloudEvents
	// distributed tracing extension), to be carried onto the outcome.
	// TraceParent is empty when absent or malformed.
	TraceParent, TraceState string
	// Data is the validated payload.
	Data RequestData
}

// RequestData is the data of employee.card.requested
// (schemas/employee.card.requested.json).
type RequestData struct {
	Employee Employee `json:"employee"`
	// ClientID is the MBanq client id of the business customer.
	ClientID int64 `json:"clientId"`
	// Reference is the ERP's own request number; empty when none.
	Reference string `json:"reference,omitempty"`
}

// Employee is the person the card is for.
type Employee struct {
	ID        string `json:"id"`
	FirstName string `json:"firstName"`
	LastName  string `json:"lastName"`
	Email     string `json:"email,omitempty"`
}

// Ref returns what an outcome needs to know of this request.
func (r *Request) Ref() RequestRef {
	return RequestRef{
		ID:          r.ID,
		Source:      r.Source,
		EmployeeID:  r.Subject,
		ClientID:    r.Data.ClientID,
		Reference:   r.Data.Reference,
		TraceParent: r.TraceParent,
		TraceState:  r.TraceState,
	}
}

// RequestRef identifies the request an outcome answers and carries what the
// outcome copies from it. It is what a store keeps of a request, so an
// outcome can be built later without the original message.
type RequestRef struct {
	ID, Source string
	// EmployeeID and ClientID are zero when unknown (an undecodable request).
	EmployeeID string
	ClientID   int64
	// Reference is the ERP's request number, echoed on card.issued.
	Reference string
	// TraceParent and TraceState are carried onto the outcome event.
	TraceParent, TraceState string
	// Generation is the request's replay generation: 0 until a replay
	// after a definite refusal moves it on (the store keeps it). Each
	// generation's outcome has an id of its own (OutcomeID).
	Generation int
}

// OutcomeID is the CloudEvent id of the outcome answering this generation
// of the request: OutcomeID(Source, ID) for the first, and a distinct id per
// replay, so that a replayed request's new outcome is neither dropped by
// JetStream's duplicate window nor by subscribers deduplicating on the
// event id.
func (r RequestRef) OutcomeID() string {
	if r.Generation == 0 {
		return OutcomeID(r.Source, r.ID)
	}
	return OutcomeID(r.Source, r.ID+"\x00replay:"+strconv.Itoa(r.Generation))
}
