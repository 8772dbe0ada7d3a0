package decision

import (
	"context"
	"errors"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/store"
)

// Faults of the deployment found by the consumer itself, beside those the
// bank client names (mbanq.Fault*). They are stable codes: logs, /readyz
// and the cardbridge_consumer_paused metric use them.
const (
	// FaultAdminLogin: MBanq refused MBANQ_ADMIN_USERNAME/PASSWORD.
	FaultAdminLogin = "admin_login_refused"
	// FaultProvisioning: MBanq refused to create a self-service user for
	// a reason of the request's making (the office, the role, the admin's
	// permissions), which no request can fix.
	FaultProvisioning = "provisioning_refused"
	// FaultSecretKey: no configured key opens a stored password
	// (CARDBRIDGE_SECRET_KEY, CARDBRIDGE_SECRET_KEY_PREVIOUS).
	FaultSecretKey = "secret_key"
	// FaultSelfServiceRole: the tenant has no self-service role to give
	// new users; set MBANQ_SELF_SERVICE_ROLE_ID.
	FaultSelfServiceRole = "self_service_role"
)

// AdminCall marks an error of a call made as the NeoBank's admin, to
// provision a self-service user: a refusal there is never the request's
// fault.
type AdminCall struct{ Err error }

func (e AdminCall) Error() string { return e.Err.Error() }
func (e AdminCall) Unwrap() error { return e.Err }

// OrderCall marks an error of the card order itself (POST /v1/cards): a
// call cut short there may have been acted on by the bank.
type OrderCall struct{ Err error }

func (e OrderCall) Error() string { return e.Err.Error() }
func (e OrderCall) Unwrap() error { return e.Err }

// ErrKeyForgotten is the cause of a request given up before its order is
// sent again: some try's answer is unknown, and for longer than the bank is
// trusted to remember the key (Policy.KeyRetention).
var ErrKeyForgotten = errors.New("not asked again: an earlier try's answer is unknown for longer than the bank is trusted to remember its Idempotency-Key (CARDBRIDGE_BANK_KEY_RETENTION); asking again could order a second card")

// ErrPaused is returned for a request that reached the bank step while
// the process is paused: it is handed back untouched.
var ErrPaused = errors.New("paused by a fault of the deployment")

// FaultOf is the one function that sorts what went wrong into a Fault.
// For the bank's errors it goes by mbanq.Classify, the one vocabulary of
// bank errors.
func FaultOf(err error) Fault {
	if err == nil {
		return FaultNone
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return FaultShutdown
	}
	var de *event.DecodeError
	var f event.Failure
	if errors.As(err, &de) || errors.As(err, &f) {
		return FaultRequest
	}
	if errors.Is(err, ErrKeyForgotten) {
		return FaultBankUnknown
	}
	if code, _ := DeploymentFault(err); code != "" {
		return FaultDeployment
	}
	if errors.Is(err, mbanq.ErrUserMismatch) || errors.Is(err, mbanq.ErrUserNotFound) {
		// One client's user needs a person; the others go on. Its
		// requests are retried (spending their budget) until then.
		return FaultBank
	}
	var be *mbanq.Error
	if !errors.As(err, &be) {
		if store.Unstorable(err) {
			return FaultUnstorable
		}
		// Not the bank: the database, NATS, or our own plumbing.
		return FaultInfra
	}
	admin := errors.As(err, new(AdminCall))
	if admin && mbanq.HasCode(err, mbanq.CodeClientIDInvalid) {
		// The bank has no such client: the request's (and its binding's)
		// fault, not the deployment's.
		return FaultRejected
	}
	switch mbanq.Classify(err) {
	case mbanq.ClassPermanent:
		return FaultRejected
	case mbanq.ClassReauth:
		return FaultReauth
	case mbanq.ClassUnknown:
		if admin {
			// A user's creation whose answer was lost is finished by the
			// next try (its key, then "duplicate username"); no card was
			// ordered.
			return FaultBank
		}
		return FaultBankUnknown
	case mbanq.ClassCanceled:
		return FaultShutdown
	}
	return FaultBank
}

// DeploymentFault names the fault of the deployment behind err (a stable
// code and a message for operators), or returns "" when err is none.
func DeploymentFault(err error) (code, message string) {
	switch {
	case errors.Is(err, ErrPaused):
		return "paused", err.Error()
	case errors.Is(err, secret.ErrDecrypt):
		return FaultSecretKey, "no configured key (CARDBRIDGE_SECRET_KEY, CARDBRIDGE_SECRET_KEY_PREVIOUS) opens a stored self-service password: " + err.Error()
	case errors.Is(err, mbanq.ErrNoSelfServiceRole):
		return FaultSelfServiceRole, err.Error()
	}
	if code := mbanq.ConfigFault(err); code != "" {
		return code, err.Error()
	}
	var be *mbanq.Error
	if errors.As(err, new(AdminCall)) && errors.As(err, &be) && !mbanq.HasCode(err, mbanq.CodeClientIDInvalid) {
		switch mbanq.Classify(err) {
		case mbanq.ClassReauth, mbanq.ClassPermanent:
			if be.Login {
				return FaultAdminLogin, "MBanq refused the admin login (MBANQ_ADMIN_USERNAME, MBANQ_ADMIN_PASSWORD): " + err.Error()
			}
			return FaultProvisioning, err.Error()
		}
	}
	return "", ""
}
