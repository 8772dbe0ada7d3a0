package sandbox

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// This file is the sandbox's own control and inspection surface, under
// /_sandbox/. It needs neither tenant nor token and does not exist at the
// real bank. Nothing here shows a password or a token.

// counters are updated with atomics on the hot path.
type counters struct {
	requests             atomic.Int64
	passwordGrants       atomic.Int64
	refreshGrants        atomic.Int64
	unauthorized         atomic.Int64
	serverErrors         atomic.Int64
	rateLimited          atomic.Int64
	tenantRateLimited    atomic.Int64
	lostResponses        atomic.Int64
	garbledResponses     atomic.Int64
	replays              atomic.Int64
	idempotencyConflicts atomic.Int64
	tooEarly             atomic.Int64
	keysInProgress       atomic.Int64
	usersCreated         atomic.Int64
	cardsCreated         atomic.Int64
	// cardOrdersInFlight is a gauge: POST /v1/cards requests received and
	// not yet answered (injected latency included).
	cardOrdersInFlight atomic.Int64
}

// Stats counts what the sandbox did since it started.
type Stats struct {
	Requests             int64 `json:"requests"` // API requests, /_sandbox/ excluded
	PasswordGrants       int64 `json:"passwordGrants"`
	RefreshGrants        int64 `json:"refreshGrants"`
	Unauthorized         int64 `json:"unauthorized"` // 401 answers, token endpoint included
	InjectedServerErrors int64 `json:"injectedServerErrors"`
	InjectedRateLimits   int64 `json:"injectedRateLimits"` // 429 answers, TenantRateLimit's included
	// TenantRateLimited counts the calls refused by Faults.TenantRateLimit.
	TenantRateLimited    int64 `json:"tenantRateLimited"`
	LostResponses        int64 `json:"lostResponses"`
	GarbledResponses     int64 `json:"garbledResponses"`
	IdempotentReplays    int64 `json:"idempotentReplays"` // answers served from cache
	IdempotencyConflicts int64 `json:"idempotencyConflicts"`
	// TooEarly counts repeats answered 425 because the first request
	// under their key was still being processed; KeysInProgress is how
	// many such first requests are being processed now.
	TooEarly       int64 `json:"tooEarly"`
	KeysInProgress int64 `json:"keysInProgress"`
	UsersCreated   int64 `json:"usersCreated"`
	CardsCreated   int64 `json:"cardsCreated"`
	// CardOrdersInFlight is not a count since the start but a gauge: card
	// orders (POST /v1/cards) the sandbox has received and not yet
	// answered or dropped, injected latency included. A crash test reads it
	// to know that a process it kills had orders at the bank.
	CardOrdersInFlight int64 `json:"cardOrdersInFlight"`
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Requests:             c.requests.Load(),
		PasswordGrants:       c.passwordGrants.Load(),
		RefreshGrants:        c.refreshGrants.Load(),
		Unauthorized:         c.unauthorized.Load(),
		InjectedServerErrors: c.serverErrors.Load(),
		InjectedRateLimits:   c.rateLimited.Load(),
		TenantRateLimited:    c.tenantRateLimited.Load(),
		LostResponses:        c.lostResponses.Load(),
		GarbledResponses:     c.garbledResponses.Load(),
		IdempotentReplays:    c.replays.Load(),
		IdempotencyConflicts: c.idempotencyConflicts.Load(),
		TooEarly:             c.tooEarly.Load(),
		KeysInProgress:       c.keysInProgress.Load(),
		UsersCreated:         c.usersCreated.Load(),
		CardsCreated:         c.cardsCreated.Load(),
		CardOrdersInFlight:   c.cardOrdersInFlight.Load(),
	}
}

// User is a user as the inspection API shows it: no password.
type User struct {
	ID                int64     `json:"id"`
	Username          string    `json:"username"`
	Firstname         string    `json:"firstname"`
	Lastname          string    `json:"lastname"`
	Email             string    `json:"email,omitempty"`
	OfficeID          int64     `json:"officeId"`
	Roles             []int64   `json:"roles"`
	IsSelfServiceUser bool      `json:"isSelfServiceUser"`
	Clients           []int64   `json:"clients,omitempty"`
	Enabled           bool      `json:"enabled"`
	CreatedAt         time.Time `json:"createdAt"`
}

// Users returns every user, by id.
func (s *Server) Users() []User {
	recs := s.users.list()
	out := make([]User, len(recs))
	for i, u := range recs {
		out[i] = User{
			ID: u.ID, Username: u.Username, Firstname: u.Firstname, Lastname: u.Lastname, Email: u.Email,
			OfficeID: u.OfficeID, Roles: u.Roles, IsSelfServiceUser: u.IsSelfServiceUser, Clients: u.Clients,
			Enabled: u.Enabled, CreatedAt: u.CreatedAt,
		}
	}
	return out
}

// UserByUsername returns a user and whether it exists.
func (s *Server) UserByUsername(username string) (User, bool) {
	for _, u := range s.Users() {
		if u.Username == username {
			return u, true
		}
	}
	return User{}, false
}

// handleInspectUsers serves GET /_sandbox/users.
func (s *Server) handleInspectUsers(w http.ResponseWriter, r *http.Request) {
	users := s.Users()
	selfService := 0
	for _, u := range users {
		if u.IsSelfServiceUser {
			selfService++
		}
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"total": len(users), "selfService": selfService, "users": users})
}

// maxInspectCards bounds the cards listed by GET /_sandbox/cards (the last
// ones); counts are always complete.
const maxInspectCards = 1000

// handleInspectCards serves GET /_sandbox/cards[?clientId=N][&limit=N].
func (s *Server) handleInspectCards(w http.ResponseWriter, r *http.Request) {
	var clientID int64
	if v := r.URL.Query().Get("clientId"); v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			s.writeError(w, errValidation(field("validation.msg.invalid.id", "clientId", v, "clientId must be a whole number.")))
			return
		}
		clientID = id
	}
	limit := maxInspectCards
	if v := r.URL.Query().Get("limit"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < limit {
			limit = n
		}
	}
	all := s.Cards()
	cards := make([]Card, 0, len(all))
	for _, c := range all {
		if clientID == 0 || c.ClientID == clientID {
			cards = append(cards, c)
		}
	}
	total := len(cards)
	if len(cards) > limit {
		cards = cards[len(cards)-limit:]
	}
	byClient := map[string]int{}
	for id, n := range s.CardCounts() {
		byClient[strconv.FormatInt(id, 10)] = n
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"total": total, "byClient": byClient, "cards": cards})
}

// handleInspectStats serves GET /_sandbox/stats.
func (s *Server) handleInspectStats(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.Stats())
}

// handleGetFaults serves GET /_sandbox/faults.
func (s *Server) handleGetFaults(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.Faults())
}

// handlePutFaults serves PUT /_sandbox/faults: the body replaces the faults
// in force (fields left out are zero). Unknown fields are refused.
func (s *Server) handlePutFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		s.writeError(w, errMalformedJSON(err.Error()))
		return
	}
	if err := s.SetFaults(f); err != nil {
		s.writeError(w, errValidation(field("validation.msg.sandbox.faults.invalid", "faults", nil, err.Error())))
		return
	}
	s.writeJSON(w, http.StatusOK, s.Faults())
}

// handlePutCardProduct serves PUT /_sandbox/cardproducts/{id} with
// {"active": bool}, to play the bank's staff fixing (or breaking) a product
// while cardbridge runs. It answers the product as GET /v1/cardproducts/{id}
// does.
func (s *Server) handlePutCardProduct(w http.ResponseWriter, r *http.Request) {
	id, aerr := pathID(r)
	if aerr != nil {
		s.writeError(w, aerr)
		return
	}
	var body struct {
		Active *bool `json:"active"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		s.writeError(w, errMalformedJSON(err.Error()))
		return
	}
	if body.Active == nil {
		s.writeError(w, errValidation(field("validation.msg.sandbox.cardproduct.active.cannot.be.blank", "active", nil, "The parameter active is mandatory.")))
		return
	}
	if err := s.SetCardProductActive(id, *body.Active); err != nil {
		s.writeError(w, errNotFound("Card product", "error.msg.cardproduct.id.invalid", id))
		return
	}
	cp, _ := s.product(id)
	s.writeJSON(w, http.StatusOK, productJSON(cp))
}

// handleExpireTokens serves POST /_sandbox/tokens/expire. With
// {"refresh": true} (or ?refresh=true) refresh tokens expire too.
func (s *Server) handleExpireTokens(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Refresh bool `json:"refresh"`
	}
	_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&body)
	if r.URL.Query().Get("refresh") == "true" {
		body.Refresh = true
	}
	if body.Refresh {
		s.ExpireAllTokens()
	} else {
		s.ExpireAccessTokens()
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"expiredAccessTokens": true, "expiredRefreshTokens": body.Refresh})
}
