package decision

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
)

func TestFaultOf(t *testing.T) {
	t.Parallel()
	bank := func(status int, code string) error {
		return fmt.Errorf("ordering card: %w", &mbanq.Error{Op: "order card", HTTPStatus: status, Code: code})
	}
	for _, tc := range []struct {
		name string
		err  error
		want Fault
	}{
		{"nothing", nil, FaultNone},
		{"shutdown", fmt.Errorf("ordering card: %w", context.Canceled), FaultShutdown},
		{"deadline", context.DeadlineExceeded, FaultShutdown},
		{"database", errors.New("connection reset by peer"), FaultInfra},
		{"undecodable event", &event.DecodeError{Reason: event.ReasonInvalidEvent}, FaultRequest},
		{"unbound source", event.Failure{Reason: event.ReasonUnboundSource}, FaultRequest},
		{"bank 400", bank(http.StatusBadRequest, mbanq.CodeValidationErrorsExist), FaultRejected},
		{"bank 403 domain rule", bank(http.StatusForbidden, mbanq.CodeDomainRuleViolation), FaultRejected},
		{"bank 404", bank(http.StatusNotFound, ""), FaultRejected},
		{"bank 503", bank(http.StatusServiceUnavailable, ""), FaultBank},
		{"bank 429", &mbanq.Error{HTTPStatus: http.StatusTooManyRequests, RetryAfter: time.Second}, FaultBank},
		{"bank 504", bank(http.StatusGatewayTimeout, ""), FaultBankUnknown},
		{"bank 503 after a timed-out attempt", &mbanq.Error{HTTPStatus: 503, OutcomeUnknown: true}, FaultBankUnknown},
		// An earlier order under the key is still at work: it may make the
		// card, so this is no rejection (and no new key may be used).
		{"bank 425 on an order", OrderCall{&mbanq.Error{Op: "order card", HTTPStatus: http.StatusTooEarly, RetryAfter: time.Second}}, FaultBankUnknown},
		{"bank 200 that cannot be read", bank(http.StatusOK, mbanq.CodeMalformedResponse), FaultBankUnknown},
		{"connection lost", &mbanq.Error{Op: "order card", Err: &net.OpError{Op: "read", Err: errors.New("reset")}}, FaultBankUnknown},
		{"token refused after a fresh one", bank(http.StatusUnauthorized, mbanq.CodeNotAuthenticated), FaultReauth},
		{"wrong tenant", bank(http.StatusUnauthorized, mbanq.CodeInvalidTenant), FaultDeployment},
		{"OAuth client refused", &mbanq.Error{HTTPStatus: 401, Code: mbanq.CodeInvalidClient, Login: true}, FaultDeployment},
		{"permission missing", bank(http.StatusForbidden, mbanq.CodeNotAuthorized), FaultDeployment},
		{"bank unreachable", &mbanq.Error{Op: "order card", Err: &net.OpError{Op: "dial", Err: errors.New("refused")}}, FaultDeployment},
		{"bank certificate not trusted", &mbanq.Error{Op: "order card", Err: x509.UnknownAuthorityError{}}, FaultDeployment},
		{"bank redirects", bank(http.StatusTemporaryRedirect, ""), FaultDeployment},
		{"secret key cannot open a password", fmt.Errorf("opening password: %w", secret.ErrDecrypt), FaultDeployment},
		{"no self-service role", AdminCall{mbanq.ErrNoSelfServiceRole}, FaultDeployment},
		{"admin login refused", AdminCall{&mbanq.Error{HTTPStatus: 401, Code: mbanq.CodeNotAuthenticated, Login: true}}, FaultDeployment},
		{"user creation refused", AdminCall{&mbanq.Error{HTTPStatus: 400, Code: mbanq.CodeValidationErrorsExist}}, FaultDeployment},
		{"user creation: the bank has no such client", AdminCall{&mbanq.Error{HTTPStatus: 404, Code: mbanq.CodeResourceNotFound,
			Errors: []mbanq.FieldError{{Code: mbanq.CodeClientIDInvalid}}}}, FaultRejected},
		{"user creation: the name is taken but the user cannot be found", AdminCall{fmt.Errorf("recovering: %w", mbanq.ErrUserNotFound)}, FaultBank},
		{"user creation: the name is another client's user", AdminCall{fmt.Errorf("recovering: %w", mbanq.ErrUserMismatch)}, FaultBank},
		{"an unknown answer older than the bank's key retention", ErrKeyForgotten, FaultBankUnknown},
		{"key reused with another body", bank(422, mbanq.CodeIdempotencyKeyReused), FaultBankUnknown},
		{"password outdated", bank(400, mbanq.CodePasswordOutdated), FaultReauth},
		{"user creation answer lost", AdminCall{&mbanq.Error{Err: &net.OpError{Op: "read", Err: errors.New("reset")}}}, FaultBank},
		{"paused", ErrPaused, FaultDeployment},
		{"Postgres refuses a value", fmt.Errorf("recording outcomes: %w", &pgconn.PgError{Code: "23514"}), FaultUnstorable},
		{"Postgres is down", fmt.Errorf("recording outcomes: %w", &pgconn.PgError{Code: "57P01"}), FaultInfra},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, FaultOf(tc.err), "%v", tc.err)
		})
	}
}

func TestDeploymentFaultNamesTheFault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&mbanq.Error{HTTPStatus: 401, Code: mbanq.CodeInvalidTenant}, mbanq.FaultInvalidTenant},
		{&mbanq.Error{HTTPStatus: 401, Code: mbanq.CodeInvalidClient, Login: true}, mbanq.FaultOAuthClient},
		{AdminCall{&mbanq.Error{HTTPStatus: 401, Code: mbanq.CodeNotAuthenticated, Login: true}}, FaultAdminLogin},
		{AdminCall{&mbanq.Error{HTTPStatus: 400}}, FaultProvisioning},
		{fmt.Errorf("x: %w", secret.ErrDecrypt), FaultSecretKey},
		{AdminCall{mbanq.ErrNoSelfServiceRole}, FaultSelfServiceRole},
		{&mbanq.Error{Err: &net.DNSError{Err: "no such host", IsNotFound: true}}, mbanq.FaultUnreachable},
		{&mbanq.Error{HTTPStatus: 401, Code: mbanq.CodeNotAuthenticated}, ""},
		{&mbanq.Error{HTTPStatus: 403, Code: mbanq.CodeDomainRuleViolation}, ""},
	} {
		code, msg := DeploymentFault(tc.err)
		require.Equal(t, tc.want, code, "%v", tc.err)
		if code != "" {
			require.NotEmpty(t, msg)
		}
	}
}
