package event

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/cardbridge/cardbridge/schemas"
)

// Outcome is a card.issued or card.failed event before encoding. NewIssued
// and NewFailed build one from a request; the fields are exported so a relay
// can also rebuild one from stored columns.
type Outcome struct {
	// Type is TypeCardIssued or TypeCardFailed; it is also the NATS subject.
	Type string
	// ID is the request's RequestRef.OutcomeID; Source is CARDBRIDGE_SOURCE.
	ID, Source string
	// Subject is the employee id, empty when unknown.
	Subject string
	// Time is when the outcome was decided.
	Time time.Time
	// TraceParent and TraceState continue the request's trace.
	TraceParent, TraceState string
	// Data is the payload, encoded as JSON: Issued, Failed, or already
	// encoded JSON as json.RawMessage.
	Data any
}

// Issued is the data of card.issued (schemas/card.issued.json).
type Issued struct {
	RequestID     string    `json:"requestId"`
	RequestSource string    `json:"requestSource"`
	EmployeeID    string    `json:"employeeId"`
	ClientID      int64     `json:"clientId"`
	CardID        int64     `json:"cardId"`
	CardToken     string    `json:"cardToken"`
	ProductID     int64     `json:"productId"`
	Status        string    `json:"status"`
	IssuedAt      time.Time `json:"issuedAt"`
	Reference     string    `json:"reference,omitempty"`
}

// Failed is the data of card.failed (schemas/card.failed.json).
type Failed struct {
	RequestID     string `json:"requestId"`
	RequestSource string `json:"requestSource"`
	EmployeeID    string `json:"employeeId,omitempty"`
	ClientID      int64  `json:"clientId,omitempty"`
	// Reason is one of the Reason* codes.
	Reason        string `json:"reason"`
	Message       string `json:"message"`
	BankErrorCode string `json:"bankErrorCode,omitempty"`
}

// Card is what the bank answered to a card order: the part of card.issued
// that does not come from the request.
type Card struct {
	ID        int64
	Token     string
	ProductID int64
	Status    string
	// IssuedAt is when the bank confirmed the card; it is also the event time.
	IssuedAt time.Time
}

// Failure says why a request failed: the part of card.failed that does not
// come from the request. It is an error, so code that decides a request's
// fate can return it as one.
type Failure struct {
	// Reason is one of the Reason* codes.
	Reason string
	// Message is for humans and must hold no secrets.
	Message string
	// BankErrorCode is MBanq's error code, when the bank refused.
	BankErrorCode string
}

func (f Failure) Error() string { return f.Reason + ": " + f.Message }

// Failure returns the failure a card.failed reports for this decode error.
func (e *DecodeError) Failure() Failure {
	return Failure{Reason: e.Reason, Message: e.Message}
}

// maxMessage is the schema's maxLength of card.failed's message.
const maxMessage = 1024

// maxBankErrorCode is the schema's maxLength of card.failed's bankErrorCode.
const maxBankErrorCode = 256

// NewIssued builds the card.issued answering req, published by source.
func NewIssued(source string, req RequestRef, card Card) Outcome {
	at := card.IssuedAt.UTC()
	return Outcome{
		Type:        TypeCardIssued,
		ID:          req.OutcomeID(),
		Source:      source,
		Subject:     req.EmployeeID,
		Time:        at,
		TraceParent: req.TraceParent,
		TraceState:  req.TraceState,
		Data: Issued{
			RequestID:     req.ID,
			RequestSource: req.Source,
			EmployeeID:    req.EmployeeID,
			ClientID:      req.ClientID,
			CardID:        card.ID,
			CardToken:     card.Token,
			ProductID:     card.ProductID,
			Status:        card.Status,
			IssuedAt:      at,
			Reference:     req.Reference,
		},
	}
}

// NewFailed builds the card.failed answering req, published by source and
// decided at at. An employee id that the schema would refuse (it comes from
// an undecodable request) is left out rather than making the event invalid,
// and a message longer than the schema allows is cut.
func NewFailed(source string, req RequestRef, f Failure, at time.Time) Outcome {
	employeeID := req.EmployeeID
	if utf8.RuneCountInString(employeeID) > 64 || !headerSafe(employeeID) {
		employeeID = ""
	}
	message := f.Message
	if message == "" {
		message = f.Reason
	}
	if utf8.RuneCountInString(message) > maxMessage {
		message = string([]rune(message)[:maxMessage-1]) + "…"
	}
	// The bank's code is the bank's (or a proxy's) to write: one longer
	// than the schema allows is cut, as the message is, rather than
	// making the answer invalid and the request unanswerable.
	bankCode := f.BankErrorCode
	if utf8.RuneCountInString(bankCode) > maxBankErrorCode {
		bankCode = string([]rune(bankCode)[:maxBankErrorCode-1]) + "…"
	}
	return Outcome{
		Type:        TypeCardFailed,
		ID:          req.OutcomeID(),
		Source:      source,
		Subject:     employeeID,
		Time:        at.UTC(),
		TraceParent: req.TraceParent,
		TraceState:  req.TraceState,
		Data: Failed{
			RequestID:     req.ID,
			RequestSource: req.Source,
			EmployeeID:    employeeID,
			ClientID:      req.ClientID,
			Reason:        f.Reason,
			Message:       message,
			BankErrorCode: bankCode,
		},
	}
}

// Validate checks the outcome's data against the schema of its type. Encode
// does not call it, since refusing to publish an already committed outcome
// would only wedge the outbox; the consumer checks each outcome before it
// commits it (ValidateData on the encoded data, which saves encoding twice).
func (o Outcome) Validate() error {
	return ValidateData(o.Type, o.Data)
}

// ValidateData checks the data of an outcome of type typ against the schema
// of that type. data may be encoded JSON ([]byte) or a value (Issued,
// Failed).
func ValidateData(typ string, data any) error {
	switch typ {
	case TypeCardIssued:
		return schemas.ValidateIssued(data)
	case TypeCardFailed:
		return schemas.ValidateFailed(data)
	}
	return fmt.Errorf("outcome type %q is neither %s nor %s", typ, TypeCardIssued, TypeCardFailed)
}
