package event

import "time"

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
}
