package consumer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/mbanq"
)

func TestClassifyAndDisposition(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want disposition
	}{
		{"shutdown", fmt.Errorf("ordering card: %w", context.Canceled), retry},
		{"deadline", context.DeadlineExceeded, retry},
		{"database", errors.New("connection reset by peer"), retry},
		{"network error reaching the bank", &mbanq.Error{Op: "order card", Err: &net.OpError{Op: "dial", Err: errors.New("refused")}}, retry},
		{"bank 503", &mbanq.Error{HTTPStatus: http.StatusServiceUnavailable}, retry},
		{"bank 429", &mbanq.Error{HTTPStatus: http.StatusTooManyRequests, RetryAfter: time.Second}, retry},
		{"bank 401 after refresh", &mbanq.Error{HTTPStatus: http.StatusUnauthorized, Code: mbanq.CodeNotAuthenticated}, retryNow},
		{"bank 400", &mbanq.Error{HTTPStatus: http.StatusBadRequest, Code: mbanq.CodeValidationErrorsExist}, term},
		{"bank 403", &mbanq.Error{HTTPStatus: http.StatusForbidden, Code: mbanq.CodeDomainRuleViolation}, term},
		{"bank 404", fmt.Errorf("ordering card: %w", &mbanq.Error{HTTPStatus: http.StatusNotFound}), term},
		{"bank 200 that cannot be read", fmt.Errorf("ordering card: %w", &mbanq.Error{HTTPStatus: http.StatusOK, Code: mbanq.CodeMalformedResponse}), retry},
		{"undecodable event", &event.DecodeError{Reason: event.ReasonInvalidEvent}, term},
		{"unbound source", event.Failure{Reason: event.ReasonUnboundSource}, term},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, dispositions[classify(tc.err)])
		})
	}
}

func TestFailureOfCarriesTheBankCode(t *testing.T) {
	f := failureOf(fmt.Errorf("ordering card: %w", &mbanq.Error{HTTPStatus: 403, Code: mbanq.CodeDomainRuleViolation, Message: "product inactive"}))
	require.Equal(t, event.ReasonBankRejected, f.Reason)
	require.Equal(t, mbanq.CodeDomainRuleViolation, f.BankErrorCode)
	require.Equal(t, event.ReasonUnboundSource, failureOf(event.Failure{Reason: event.ReasonUnboundSource}).Reason)
	require.Equal(t, event.ReasonSchemaInvalid, failureOf(&event.DecodeError{Reason: event.ReasonSchemaInvalid}).Reason)
}

func TestRetryDelayGrowsAndIsCapped(t *testing.T) {
	require.Equal(t, time.Second, retryDelay(1))
	require.Equal(t, 2*time.Second, retryDelay(2))
	require.Equal(t, 8*time.Second, retryDelay(4))
	require.Equal(t, 5*time.Minute, retryDelay(100))
	require.Less(t, retryDelay(9), retryDelay(10))
}
