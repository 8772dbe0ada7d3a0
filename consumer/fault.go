package consumer

import (
	"errors"
	"fmt"

	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/mbanq"
)

// failure is what card.failed reports for a Decision to fail with reason.
func failure(reason string, cause error, f decision.Facts) event.Failure {
	switch reason {
	case event.ReasonRetriesExhausted:
		return event.Failure{Reason: reason, Message: fmt.Sprintf(
			"the bank failed every try for %s, the retry budget (last: %s)", f.Spent.Round(1e9), safeMessage(cause))}
	case event.ReasonBankOutcomeUnknown:
		ef := event.Failure{Reason: reason, Message: fmt.Sprintf(
			"the bank's answer to the card order is not known after %s of trying (last: %s); a card may exist: a replay asks again under the same Idempotency-Key and finds it while the bank remembers the key",
			f.Spent.Round(1e9), safeMessage(cause))}
		var be *mbanq.Error
		if f.Fault == decision.FaultRejected && errors.As(cause, &be) {
			ef.Message = fmt.Sprintf("the bank refused a later try (%s) after an earlier try's answer was lost; a card may exist: a replay asks again under the same Idempotency-Key (last: %s)",
				be.Code, safeMessage(cause))
			ef.BankErrorCode = be.Code
		}
		return ef
	}
	var ef event.Failure
	if errors.As(cause, &ef) {
		return ef
	}
	var de *event.DecodeError
	if errors.As(cause, &de) {
		return de.Failure()
	}
	ef = event.Failure{Reason: reason, Message: safeMessage(cause)}
	var be *mbanq.Error
	if errors.As(cause, &be) {
		ef.BankErrorCode = be.Code
	}
	return ef
}

// safeMessage is an error's text for a card.failed. Errors in cardbridge
// never carry secrets (package secret redacts them by type), so the text
// can be published as it is.
func safeMessage(err error) string {
	s := err.Error()
	if len(s) > 500 {
		s = s[:500]
	}
	return s
}
