package mbanq

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/singleflight"

	"github.com/cardbridge/cardbridge/internal/secret"
)

const (
	// maxRenewMargin is how long before expiry a cached token is renewed at
	// most; a token is also renewed after 90% of its lifetime, so that short
	// lifetimes (sandbox tests) still leave time to use it.
	maxRenewMargin = 60 * time.Second
	// defaultTokenLifetime is assumed when an answer has no expires_in.
	defaultTokenLifetime = 5 * time.Minute
)

// tokenSource caches one user's OAuth tokens.
type tokenSource struct {
	c     *Client
	creds Credentials

	mu        sync.Mutex
	access    secret.String
	refresh   secret.String
	renewAt   time.Time // when the access token is no longer handed out
	expiresAt time.Time

	// flight makes concurrent callers share one fetch.
	flight singleflight.Group
}

// Token returns a valid access token for the Session's user, fetching one if
// needed. Callers making their own HTTP calls must not log it.
func (s *Session) Token(ctx context.Context) (secret.String, error) {
	return s.tokens.get(ctx, "get token")
}

// Login fetches a new token with the password grant, whatever is cached,
// and keeps it. It checks that MBanq accepts the tenant, the OAuth client
// and the user's credentials, which is how a paused consumer probes whether
// a fault of the deployment has cleared.
func (s *Session) Login(ctx context.Context) error {
	_, err := s.tokens.grant(ctx, "oauth token (password grant)", s.tokens.passwordForm())
	return err
}

// cached returns the access token if it is still fresh.
func (ts *tokenSource) cached() (secret.String, bool) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.access.IsZero() || !ts.c.now().Before(ts.renewAt) {
		return secret.String{}, false
	}
	return ts.access, true
}

// get returns a fresh access token. Only one fetch runs at a time; the others
// wait for it, each in a select on its own context. The fetch itself runs
// without the caller's cancellation, so that a caller giving up does not
// fail the fetch for everyone else waiting on it.
func (ts *tokenSource) get(ctx context.Context, op string) (secret.String, error) {
	if t, ok := ts.cached(); ok {
		return t, nil
	}
	ch := ts.flight.DoChan("token", func() (any, error) {
		if t, ok := ts.cached(); ok {
			return t, nil
		}
		return ts.fetch(context.WithoutCancel(ctx))
	})
	select {
	case <-ctx.Done():
		return secret.String{}, &Error{Op: op + ": get token", Err: ctx.Err()}
	case res := <-ch:
		if res.Err != nil {
			return secret.String{}, withOp(res.Err, op)
		}
		return res.Val.(secret.String), nil
	}
}

// withOp prefixes the Op of a shared token error with the caller's operation,
// on a copy because the same error is handed to every waiter.
func withOp(err error, op string) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	cp := *e
	cp.Op = op + ": " + e.Op
	return &cp
}

// invalidate forgets the access token if it is still the one that was
// refused; a token renewed meanwhile by another caller is kept. The refresh
// token is kept for the next fetch.
func (ts *tokenSource) invalidate(refused secret.String) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.access.Reveal() == refused.Reveal() {
		ts.access = secret.String{}
	}
}

// fetch renews the token with the refresh_token grant when there is a
// refresh token, and otherwise, or when that fails for any reason, with the
// password grant.
func (ts *tokenSource) fetch(ctx context.Context) (secret.String, error) {
	ts.mu.Lock()
	refresh := ts.refresh
	ts.mu.Unlock()

	if !refresh.IsZero() {
		t, err := ts.grant(ctx, "oauth token (refresh grant)", url.Values{
			"grant_type":    {"refresh_token"},
			"refresh_token": {refresh.Reveal()},
			"client_id":     {ts.c.cfg.ClientID},
			"client_secret": {ts.c.cfg.ClientSecret.Reveal()},
		})
		if err == nil {
			return t, nil
		}
		ts.c.log.LogAttrs(ctx, slog.LevelInfo, "mbanq refresh grant failed, using password grant",
			slog.String("user", ts.creds.Username), slog.String("error", err.Error()))
	}
	return ts.grant(ctx, "oauth token (password grant)", ts.passwordForm())
}

// passwordForm is the body of a password grant for the source's user.
func (ts *tokenSource) passwordForm() url.Values {
	return url.Values{
		"grant_type":    {"password"},
		"username":      {ts.creds.Username},
		"password":      {ts.creds.Password.Reveal()},
		"client_id":     {ts.c.cfg.ClientID},
		"client_secret": {ts.c.cfg.ClientSecret.Reveal()},
	}
}

// tokenResponse is the answer of POST /oauth/token.
type tokenResponse struct {
	AccessToken  string  `json:"access_token"`
	RefreshToken string  `json:"refresh_token"`
	ExpiresIn    flexInt `json:"expires_in"`
	TokenType    string  `json:"token_type"`
}

// grant makes one token request (no retries: the call that needs the token
// retries as a whole) and caches its result.
func (ts *tokenSource) grant(ctx context.Context, op string, form url.Values) (secret.String, error) {
	r := request{
		op:      op,
		method:  http.MethodPost,
		path:    "/oauth/token",
		form:    form,
		idemKey: uuid.NewString(), // a token request creates nothing; any key will do
		public:  true,
	}
	body, contentType, err := r.encode()
	if err != nil {
		return secret.String{}, err
	}
	var tr tokenResponse
	err = ts.c.exchange(ctx, &r, body, contentType, secret.String{}, uuid.NewString(), 1, &tr)
	if err == nil && tr.AccessToken == "" {
		err = &Error{Op: op, HTTPStatus: http.StatusOK, Code: CodeMalformedResponse, Message: "no access_token in the answer"}
	}
	ts.c.observer().TokenGranted(form.Get("grant_type"), err)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			cp := *e
			cp.Login = true
			err = &cp
		}
		return secret.String{}, err
	}
	lifetime := time.Duration(tr.ExpiresIn) * time.Second
	if lifetime <= 0 {
		lifetime = defaultTokenLifetime
	}
	now := ts.c.now()
	access := secret.New(tr.AccessToken)

	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.access = access
	if tr.RefreshToken != "" {
		ts.refresh = secret.New(tr.RefreshToken)
	}
	ts.expiresAt = now.Add(lifetime)
	ts.renewAt = ts.expiresAt.Add(-min(lifetime/10, maxRenewMargin))
	return access, nil
}
