package event

import "fmt"

// DecodeError says why an incoming message is not an acceptable
// employee.card.requested, with whatever could still be read of it so that a
// card.failed can be correlated with the request.
type DecodeError struct {
	// Reason is one of the Reason* codes.
	Reason string
	// Message explains the problem in one line. It quotes no header values
	// and no personal data (schema messages name the path, not the value),
	// and it is cut short where it quotes an attribute, so it is safe to log
	// and to publish in a card.failed.
	Message string
	// ID, Source, Subject and Type are the event's attributes as far as they
	// could be read; each is empty when missing, malformed, not valid UTF-8
	// or longer than MaxAttributeLength.
	ID, Source, Subject, Type string
	// TraceParent and TraceState are the trace context, when readable.
	TraceParent, TraceState string
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%s: %s", e.Reason, e.Message)
}

// Correlatable reports whether the error names a request, that is whether a
// card.failed can be published for it. Without both id and source there is no
// one to answer, and every such answer would share one outcome id.
func (e *DecodeError) Correlatable() bool {
	return e.ID != "" && e.Source != ""
}

// Ref returns what a card.failed needs to know of the rejected request.
func (e *DecodeError) Ref() RequestRef {
	return RequestRef{
		ID:          e.ID,
		Source:      e.Source,
		EmployeeID:  e.Subject,
		TraceParent: e.TraceParent,
		TraceState:  e.TraceState,
	}
}
