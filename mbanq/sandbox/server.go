package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// maxBody bounds request bodies.
const maxBody = 1 << 20

// Server is the sandbox. It implements http.Handler.
type Server struct {
	// Fixed by the seed; read without locks. Only a card product's active
	// flag can change (SetCardProductActive), so it lives in productActive,
	// whose map is fixed too: ordering a card pays one atomic load for it.
	tenantID          string
	oauthClientID     string
	oauthClientSecret string
	offices           map[int64]Office
	roles             map[int64]Role
	roleIDs           []int64
	clients           map[int64]Client
	savings           map[int64]SavingsAccount
	products          map[int64]CardProduct
	productActive     map[int64]*atomic.Bool
	productList       []CardProduct

	now    func() time.Time
	log    *slog.Logger
	tokens *tokenIssuer
	faults *faultInjector
	users  *userStore
	cards  *cardStore
	idem   *idempotencyCache
	stats  counters

	ridPrefix string
	ridSeq    atomic.Uint64

	api   *http.ServeMux
	admin *http.ServeMux
}

// Option configures a Server.
type Option func(*options)

type options struct {
	faults   Faults
	now      func() time.Time
	randSeed uint64
	seeded   bool
	log      *slog.Logger
}

// WithFaults sets the faults in force from the start.
func WithFaults(f Faults) Option { return func(o *options) { o.faults = f } }

// WithClock replaces time.Now for token expiry, so tests can move time on
// instead of sleeping.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithRandSeed makes the fault draws deterministic for a given sequence of
// requests.
func WithRandSeed(seed uint64) Option {
	return func(o *options) { o.randSeed, o.seeded = seed, true }
}

// WithLogger makes the sandbox log what it injects; by default it logs
// nothing.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// New returns a sandbox in the state described by seed. It panics if the
// seed (see Seed.Validate) or the WithFaults value is invalid, as that is a
// mistake in the program or its test, not a runtime condition; LoadSeed
// validates files and SetFaults returns an error.
func New(seed Seed, opts ...Option) *Server {
	if err := seed.Validate(); err != nil {
		panic(fmt.Sprintf("sandbox: invalid seed: %v", err))
	}
	o := options{now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if !o.seeded {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.randSeed = binary.LittleEndian.Uint64(b[:])
	}
	if err := o.faults.validate(); err != nil {
		panic(fmt.Sprintf("sandbox: invalid faults: %v", err))
	}
	var prefix [4]byte
	_, _ = rand.Read(prefix[:])

	s := &Server{
		tenantID:          seed.TenantID,
		oauthClientID:     seed.OAuthClient.ID,
		oauthClientSecret: seed.OAuthClient.Secret.Reveal(),
		offices:           map[int64]Office{},
		roles:             map[int64]Role{},
		clients:           map[int64]Client{},
		savings:           map[int64]SavingsAccount{},
		products:          map[int64]CardProduct{},
		productActive:     map[int64]*atomic.Bool{},
		now:               o.now,
		log:               o.log,
		tokens:            newTokenIssuer(),
		faults:            newFaultInjector(o.faults, o.randSeed),
		users:             newUserStore(),
		cards:             newCardStore(),
		idem:              newIdempotencyCache(o.now),
		ridPrefix:         hex.EncodeToString(prefix[:]),
	}
	for _, x := range seed.Offices {
		s.offices[x.ID] = x
	}
	for _, x := range seed.Roles {
		s.roles[x.ID] = x
	}
	s.roleIDs = sortedIDs(s.roles)
	for _, x := range seed.Clients {
		s.clients[x.ID] = x
	}
	for _, x := range seed.SavingsAccounts {
		s.savings[x.ID] = x
	}
	for _, x := range seed.CardProducts {
		s.products[x.ID] = x
		s.productActive[x.ID] = new(atomic.Bool)
		s.productActive[x.ID].Store(x.Active)
	}
	for _, id := range sortedIDs(s.products) {
		s.productList = append(s.productList, s.products[id])
	}
	for _, su := range append([]SeedUser{seed.Admin}, seed.Users...) {
		u := &userRec{
			Username: su.Username, Firstname: su.Firstname, Lastname: su.Lastname, Email: su.Email,
			OfficeID: su.OfficeID, Roles: su.Roles, IsSelfServiceUser: su.IsSelfServiceUser, Clients: su.Clients,
			Enabled: true, CreatedAt: s.now(), perms: s.permsOf(su.Roles),
		}
		u.setPassword(su.Password.Reveal())
		s.users.insert(u)
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.api = http.NewServeMux()
	s.api.HandleFunc("POST /oauth/token", s.handleToken)
	s.api.Handle("GET /v1/userdetails", s.endpoint("", false, s.handleUserDetails))
	s.api.Handle("GET /v1/roles", s.endpoint(PermissionReadRole, true, s.handleRoles))
	s.api.Handle("POST /v1/users", s.endpoint(PermissionCreateUser, true, s.handleCreateUser))
	s.api.Handle("GET /v1/users", s.endpoint(PermissionReadUser, true, s.handleListUsers))
	s.api.Handle("GET /v1/users/{id}", s.endpoint(PermissionReadUser, true, s.handleGetUser))
	s.api.Handle("PUT /v1/users/{id}", s.endpoint(PermissionUpdateUser, true, s.handleUpdateUser))
	s.api.Handle("GET /v1/clients/{id}", s.endpoint(PermissionReadClient, false, s.handleGetClient))
	s.api.Handle("GET /v1/cardproducts", s.endpoint(PermissionReadCardProduct, false, s.handleCardProducts))
	s.api.Handle("GET /v1/cardproducts/{id}", s.endpoint(PermissionReadCardProduct, false, s.handleCardProduct))
	s.api.Handle("POST /v1/cards", s.endpoint(PermissionCreateCard, false, s.handleOrderCard))
	s.api.Handle("GET /v1/cards/{id}", s.endpoint(PermissionReadCard, false, s.handleGetCard))
	s.api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, errRouteNotFound(r.URL.Path))
	})

	s.admin = http.NewServeMux()
	s.admin.HandleFunc("GET /_sandbox/faults", s.handleGetFaults)
	s.admin.HandleFunc("PUT /_sandbox/faults", s.handlePutFaults)
	s.admin.HandleFunc("POST /_sandbox/tokens/expire", s.handleExpireTokens)
	s.admin.HandleFunc("GET /_sandbox/users", s.handleInspectUsers)
	s.admin.HandleFunc("GET /_sandbox/cards", s.handleInspectCards)
	s.admin.HandleFunc("GET /_sandbox/stats", s.handleInspectStats)
	s.admin.HandleFunc("PUT /_sandbox/cardproducts/{id}", s.handlePutCardProduct)
}

// ServeHTTP answers one request: sandbox control endpoints directly, API
// requests after injected faults and the tenant check.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-request-id", s.requestID())
	if strings.HasPrefix(r.URL.Path, "/_sandbox/") {
		s.admin.ServeHTTP(w, r)
		return
	}
	s.stats.requests.Add(1)
	if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
		s.stats.cardOrdersInFlight.Add(1)
		defer s.stats.cardOrdersInFlight.Add(-1)
	}
	if s.faults.bucket.on.Load() && r.Header.Get("tenantId") == s.tenantID {
		if ok, ra := s.faults.bucket.take(s.now()); !ok {
			s.stats.rateLimited.Add(1)
			s.stats.tenantRateLimited.Add(1)
			w.Header().Set("Retry-After", strconv.FormatInt(max(1, int64((ra+time.Second-1)/time.Second)), 10))
			s.writeError(w, errRateLimited())
			return
		}
	}
	if d := s.faults.decide(r.URL.Path); d != (decision{}) {
		if d.status == 0 && d.delay > 0 {
			// The request is processed: its latency is the bank's work,
			// which goes on when the client hangs up, as at a real bank.
			// A POST under an Idempotency-Key takes it while holding the
			// key, so that a repeat meanwhile is answered 425.
			if r.Method == http.MethodPost && r.Header.Get("Idempotency-Key") != "" && strings.HasPrefix(r.URL.Path, "/v1/") {
				r = r.WithContext(context.WithValue(r.Context(), workDelayKey{}, d.delay))
			} else {
				work(d.delay)
			}
		} else if d.delay > 0 && !wait(r.Context(), d.delay) {
			return
		}
		switch {
		case d.status == http.StatusTooManyRequests:
			s.stats.rateLimited.Add(1)
			w.Header().Set("Retry-After", strconv.FormatInt(int64((d.retryAfter+time.Second-1)/time.Second), 10))
			s.writeError(w, errRateLimited())
			return
		case d.status >= 500:
			s.stats.serverErrors.Add(1)
			s.writeError(w, errServer(d.status))
			return
		}
	}
	if r.Header.Get("tenantId") != s.tenantID {
		s.writeError(w, errInvalidTenant())
		return
	}
	s.api.ServeHTTP(w, r)
}

// apiFunc handles an authenticated API request. It returns the value to
// answer with 200 (Fineract answers creations with 200 too) or an error.
type apiFunc func(r *http.Request, p *principal, body []byte) (any, *apiError)

// endpoint wraps an apiFunc with authentication, authorisation, the body,
// Idempotency-Key handling for POST and the lost and garbled answer faults.
// adminOnly endpoints refuse self-service users whatever their permissions.
func (s *Server) endpoint(perm string, adminOnly bool, h apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, aerr := s.authenticate(r)
		if aerr != nil {
			s.stats.unauthorized.Add(1)
			s.writeError(w, aerr)
			return
		}
		if (adminOnly && p.user.IsSelfServiceUser) || (perm != "" && !p.can(perm)) {
			s.writeError(w, errNotAuthorized(r.Method+" "+r.URL.Path))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			s.writeError(w, errMalformedJSON("cannot read the body"))
			return
		}
		key := r.Header.Get("Idempotency-Key")
		if r.Method != http.MethodPost || key == "" {
			status, out := s.run(h, r, p, body)
			s.answerProcessed(w, r, status, out)
			return
		}
		s.idempotent(w, r, p, key, body, h)
	})
}

// idempotent runs a POST once per Idempotency-Key; see idempotency.go.
func (s *Server) idempotent(w http.ResponseWriter, r *http.Request, p *principal, key string, body []byte, h apiFunc) {
	scoped := r.Method + " " + r.URL.Path + " " + key
	for {
		e, leader, conflict := s.idem.begin(scoped, body)
		if conflict {
			s.stats.idempotencyConflicts.Add(1)
			s.writeError(w, errIdempotencyConflict())
			return
		}
		if !leader {
			if !e.isDone() {
				// As Fineract: the first request under the key is still
				// being processed; it may yet create what was asked.
				s.stats.tooEarly.Add(1)
				w.Header().Set("Retry-After", "1")
				s.writeError(w, errTooEarly())
				return
			}
			if e.abandoned {
				continue
			}
			s.stats.replays.Add(1)
			w.Header().Set("x-served-from-cache", "true")
			s.writeBody(w, e.status, e.body)
			return
		}
		s.stats.keysInProgress.Add(1)
		if d, _ := r.Context().Value(workDelayKey{}).(time.Duration); d > 0 {
			work(d)
		}
		status, out := s.runOrAbandon(h, r, p, body, scoped, e)
		s.stats.keysInProgress.Add(-1)
		s.idem.finish(e, status, out)
		s.answerProcessed(w, r, status, out)
		return
	}
}

// runOrAbandon runs h, releasing the key if h panics so waiters do not hang.
func (s *Server) runOrAbandon(h apiFunc, r *http.Request, p *principal, body []byte, key string, e *idemEntry) (status int, out []byte) {
	ok := false
	defer func() {
		if !ok {
			s.idem.abandon(key, e)
		}
	}()
	status, out = s.run(h, r, p, body)
	ok = true
	return status, out
}

// run calls h and encodes its answer.
func (s *Server) run(h apiFunc, r *http.Request, p *principal, body []byte) (int, []byte) {
	v, aerr := h(r, p, body)
	if aerr != nil {
		b, _ := json.Marshal(aerr.body)
		return aerr.status, b
	}
	b, err := json.Marshal(v)
	if err != nil {
		e := errServer(http.StatusInternalServerError)
		b, _ = json.Marshal(e.body)
		return e.status, b
	}
	return http.StatusOK, b
}

// answerProcessed writes the answer of a request that was processed, after
// the faults that strike a successful POST once it is done: its answer lost
// or garbled. For a POST with an Idempotency-Key the cache already holds the
// real answer, so a retry under the key learns what happened.
func (s *Server) answerProcessed(w http.ResponseWriter, r *http.Request, status int, out []byte) {
	if r.Method == http.MethodPost && status == http.StatusOK {
		if s.faults.loseResponse(r.URL.Path) {
			s.loseResponse(r)
		}
		if g := s.faults.garble(r.URL.Path); g != garbleNone {
			out = s.garbledBody(r, g, out)
		}
	}
	s.writeBody(w, status, out)
}

// garbledBody is what a garbled answer carries instead of out. The status
// stays 200: the client must notice that the body does not hold the result.
func (s *Server) garbledBody(r *http.Request, g garbling, out []byte) []byte {
	s.stats.garbledResponses.Add(1)
	s.log.Info("sandbox: garbling the answer", "method", r.Method, "path", r.URL.Path, "form", g.String())
	switch g {
	case garbleEmptyJSON:
		return []byte(`{}`)
	case garbleTruncated:
		return out[:len(out)/2]
	}
	return nil
}

// loseResponse drops the connection without answering; the request has
// been processed. http.ErrAbortHandler makes net/http close the connection
// quietly.
func (s *Server) loseResponse(r *http.Request) {
	s.stats.lostResponses.Add(1)
	s.log.Info("sandbox: dropping the answer", "method", r.Method, "path", r.URL.Path)
	panic(http.ErrAbortHandler)
}

func (s *Server) writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{}`)
	}
	s.writeBody(w, status, b)
}

func (s *Server) writeError(w http.ResponseWriter, e *apiError) {
	s.writeJSON(w, e.status, e.body)
}

// requestID makes the x-request-id of an answer: a per-server random prefix
// and a counter, cheaper than a UUID and unique enough for logs.
func (s *Server) requestID() string {
	return s.ridPrefix + "-" + strconv.FormatUint(s.ridSeq.Add(1), 16)
}

// pathID reads the {id} of a path.
func pathID(r *http.Request) (int64, *apiError) {
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		return 0, errValidation(field("validation.msg.invalid.id", "id", raw, "The id in the path must be a positive whole number.", raw))
	}
	return id, nil
}

// workDelayKey carries the latency of a POST under an Idempotency-Key to
// where it holds the key.
type workDelayKey struct{}

// work takes d, the time the bank spends on a request. Nothing cuts it
// short: a client that hangs up does not stop the bank's work.
func work(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	<-t.C
}

// wait sleeps for d unless ctx ends first; it reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
