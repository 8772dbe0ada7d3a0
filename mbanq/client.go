package mbanq

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// Client holds what all Sessions share: configuration, HTTP transport and
// logger. It is safe for concurrent use; create one per process and reuse it.
type Client struct {
	cfg  Config
	http *http.Client
	log  *slog.Logger
	// now is the clock of the token caches; tests replace it.
	now func() time.Time
	// limiter paces the calls to the bank; nil when Config.DisableLimiter.
	limiter *limiter

	mu       sync.Mutex
	sessions map[string]*Session // by username
}

// New validates cfg, fills in its defaults and returns a Client. Its error
// names every invalid field.
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		http:     observed(cfg.HTTPClient, cfg.Observer),
		log:      cfg.Logger,
		now:      time.Now,
		sessions: make(map[string]*Session),
	}
	if !cfg.DisableLimiter {
		c.limiter = newLimiter(realClock{}, cfg.MaxConcurrency, cfg.MaxRetryAfter)
		if w, ok := cfg.Observer.(LimiterWatcher); ok {
			w.WatchLimiter(c.limiter.state)
		}
	}
	return c, nil
}

// LimiterState returns the state of the adaptive limiter, for metrics; ok
// is false when it is disabled.
func (c *Client) LimiterState() (s LimiterState, ok bool) {
	if c.limiter == nil {
		return LimiterState{}, false
	}
	return c.limiter.state(), true
}

// Credentials are the username and password of an MBanq user.
type Credentials struct {
	Username string
	Password secret.String
}

// Session calls MBanq as one user. It owns that user's token: the token is
// fetched on first use, cached until shortly before it expires, renewed with
// the refresh_token grant (falling back to the password grant), and fetched
// once for all concurrent callers. A Session is safe for concurrent use.
type Session struct {
	c      *Client
	creds  Credentials
	tokens *tokenSource
}

// As returns the Session for creds. Calling As again with the same username
// and password returns the same Session, so its token cache is shared even by
// callers that call As on every request; a different password (after a
// reset) replaces the Session.
func (c *Client) As(creds Credentials) *Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.sessions[creds.Username]; ok && samePassword(s.creds.Password, creds.Password) {
		return s
	}
	s := &Session{c: c, creds: creds}
	s.tokens = &tokenSource{c: c, creds: creds}
	c.sessions[creds.Username] = s
	return s
}

func samePassword(a, b secret.String) bool {
	return subtle.ConstantTimeCompare([]byte(a.Reveal()), []byte(b.Reveal())) == 1
}

// Username returns the user the Session acts as.
func (s *Session) Username() string { return s.creds.Username }
