package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The database must not be able to hang the process: every connection,
// statement and lock wait has a bound. Postgres enforces the statement,
// lock and idle-in-transaction bounds itself (they are session settings
// sent when a connection opens); the client bounds every call of the
// request path as well, for a server that does not answer at all (a lost
// host, a network that drops packets). A setting in DATABASE_URL wins over
// these defaults (connect_timeout, statement_timeout, lock_timeout,
// idle_in_transaction_session_timeout, as URL parameters or in `options`).
const (
	// DefaultConnectTimeout bounds opening one connection to one host.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultStatementTimeout bounds one statement. Every statement of the
	// request path is a handful of index probes; the statements that may
	// legitimately run longer (migrations, the purge) lift it for
	// themselves.
	DefaultStatementTimeout = 10 * time.Second
	// DefaultLockTimeout bounds a wait for a lock: a table locked by
	// someone else fails the statement rather than queueing it.
	DefaultLockTimeout = 5 * time.Second
	// DefaultIdleInTransactionTimeout ends a session left idle inside a
	// transaction, so that a stuck client cannot hold locks for ever. It is
	// longer than any wait cardbridge makes inside a transaction (the
	// relay's publish).
	DefaultIdleInTransactionTimeout = time.Minute
	// CallTimeout bounds a call of the request path from the client's side
	// (connecting included), whatever the server does: the longest a
	// handler waits for Postgres before the message is handed back.
	CallTimeout = DefaultStatementTimeout + DefaultConnectTimeout
	// readyTimeout bounds each statement of the readiness check.
	readyTimeout = time.Second
)

// ErrUnavailable is returned when Postgres did not answer a call of the
// request path within CallTimeout (a stalled or unreachable server). What
// the call wrote, if anything, is unknown to the caller: a write may still
// land. It is not a context error, so callers that read context errors as
// "shutting down" can tell the two apart.
var ErrUnavailable = errors.New("database did not answer in time")

// ErrUnconfirmed is returned by a write whose caller stopped waiting
// (its context ended) after the write was submitted: it may or may not be
// committed. It wraps the context's error.
var ErrUnconfirmed = errors.New("stopped waiting for a submitted write; it may still be committed")

// sessionDefaults sets the session timeouts cfg does not set already.
func sessionDefaults(cfg *pgxpool.Config) {
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// pgx bounds the whole connection to each host by it.
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	params := cfg.ConnConfig.RuntimeParams
	for name, d := range map[string]time.Duration{
		"statement_timeout":                   DefaultStatementTimeout,
		"lock_timeout":                        DefaultLockTimeout,
		"idle_in_transaction_session_timeout": DefaultIdleInTransactionTimeout,
	} {
		if _, set := params[name]; set || strings.Contains(params["options"], name) {
			continue
		}
		params[name] = fmt.Sprintf("%dms", d.Milliseconds())
	}
}

// bound gives a call of the request path the client-side bound.
func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, CallTimeout)
}

// unanswered translates an error of a call made under bound(caller): when
// the bound ran out while the caller's own context had not ended, the
// error is ErrUnavailable rather than a context error.
func unanswered(caller context.Context, err error) error {
	if err == nil || caller.Err() != nil {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || pgconn.Timeout(err) {
		return fmt.Errorf("%w (%s): %v", ErrUnavailable, CallTimeout, err)
	}
	return err
}

// Unavailable reports whether err says the database could not be used
// (not reached, not answering in time, shutting down, a lock or statement
// timeout), as opposed to refusing what a call asked. Such an error says
// nothing of the rows of the call: running them one by one would only
// wait longer.
func Unavailable(err error) bool {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || pgconn.Timeout(err) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "55P03", "25P03": // lock_not_available, idle_in_transaction_session_timeout
			return true
		}
		if len(pe.Code) == 5 {
			switch pe.Code[:2] {
			// connection exception, insufficient resources, operator
			// intervention (query_canceled by statement_timeout, admin
			// shutdown, cannot connect now), system error
			case "08", "53", "57", "58":
				return true
			}
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		pgconn.SafeToRetry(err)
}
