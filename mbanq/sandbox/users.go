package sandbox

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/mail"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// userRec is a user. Records are never changed once stored: an update
// stores a new record, so a request can hold one without a lock.
type userRec struct {
	ID                           int64
	Username                     string
	Firstname                    string
	Lastname                     string
	Email                        string
	OfficeID                     int64
	Roles                        []int64
	IsSelfServiceUser            bool
	Clients                      []int64
	Enabled                      bool
	PasswordNeverExpires         bool
	ResetPasswordAfterFirstLogin bool
	CreatedAt                    time.Time

	// The password is kept salted and hashed so that no inspection or dump
	// can show it. SHA-256 is enough for a sandbox; a bank would use a slow
	// KDF.
	salt [16]byte
	hash [32]byte

	perms map[string]bool // union of the roles' permissions
}

func (u *userRec) setPassword(pw string) {
	_, _ = rand.Read(u.salt[:])
	u.hash = sha256.Sum256(append(u.salt[:], pw...))
}

func (u *userRec) checkPassword(pw string) bool {
	h := sha256.Sum256(append(u.salt[:], pw...))
	return subtle.ConstantTimeCompare(h[:], u.hash[:]) == 1
}

// inScope reports whether the user may see a client's data: system users
// see every client, self-service users only theirs.
func (u *userRec) inScope(clientID int64) bool {
	return !u.IsSelfServiceUser || slices.Contains(u.Clients, clientID)
}

type userStore struct {
	mu     sync.RWMutex
	ids    map[int64]*userRec
	names  map[string]*userRec
	nextID int64
}

func newUserStore() *userStore {
	return &userStore{ids: map[int64]*userRec{}, names: map[string]*userRec{}, nextID: 1}
}

func (st *userStore) byID(id int64) *userRec {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.ids[id]
}

func (st *userStore) byUsername(name string) *userRec {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.names[name]
}

// insert gives u the next id and stores it, unless the username is taken.
func (st *userStore) insert(u *userRec) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, taken := st.names[u.Username]; taken {
		return false
	}
	u.ID = st.nextID
	st.nextID++
	st.ids[u.ID] = u
	st.names[u.Username] = u
	return true
}

// replace stores a new version of a user (same id), unless its new
// username belongs to someone else.
func (st *userStore) replace(u *userRec) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	old := st.ids[u.ID]
	if other, taken := st.names[u.Username]; taken && other.ID != u.ID {
		return false
	}
	delete(st.names, old.Username)
	st.ids[u.ID] = u
	st.names[u.Username] = u
	return true
}

func (st *userStore) list() []*userRec {
	st.mu.RLock()
	out := make([]*userRec, 0, len(st.ids))
	for _, u := range st.ids {
		out = append(out, u)
	}
	st.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// permsOf computes the permissions granted by roles.
func (s *Server) permsOf(roles []int64) map[string]bool {
	perms := map[string]bool{}
	for _, id := range roles {
		r, ok := s.roles[id]
		if !ok || r.Disabled {
			continue
		}
		for _, p := range r.Permissions {
			perms[p] = true
		}
	}
	return perms
}

// Fields a user body may hold (Fineract's, plus MBanq's
// resetPasswordAfterFirstLogin and enabled).
var userParams = []string{
	"username", "firstname", "lastname", "email", "officeId", "staffId", "roles",
	"sendPasswordToEmail", "passwordNeverExpires", "isSelfServiceUser", "clients",
	"password", "repeatPassword", "resetPasswordAfterFirstLogin", "enabled", "notSelected",
}

const (
	maxNameLength     = 100
	maxPasswordLength = 50
)

// userInput is a validated user body. For an update only the present fields
// are set (see present).
type userInput struct {
	present                      map[string]bool
	username, firstname          string
	lastname, email, password    string
	officeID                     int64
	roles, clients               []int64
	isSelfService, sendPwToEmail bool
	enabled, pwNeverExpires      bool
	resetPwAfterFirstLogin       bool
}

// parseUser validates a user body as Fineract's UserDataValidator does.
// create says whether the body creates a user (fields required) or updates
// one (fields optional).
func parseUser(body []byte, create bool) (*userInput, *apiError) {
	p, aerr := parseParams(body, "user", userParams)
	if aerr != nil {
		return nil, aerr
	}
	in := &userInput{present: map[string]bool{}, enabled: true}
	for k := range p.raw {
		in.present[k] = true
	}

	name := func(param string) string {
		v := strings.TrimSpace(p.str(param))
		switch {
		case v == "" && (create || p.has(param)):
			p.fail(param, "cannot.be.blank", fmt.Sprintf("The parameter %s is mandatory.", param), nil)
		case utf8.RuneCountInString(v) > maxNameLength:
			p.fail(param, "exceeds.max.length", fmt.Sprintf("The parameter %s exceeds max length of %d.", param, maxNameLength), v, maxNameLength)
		}
		return v
	}
	in.username = name("username")
	in.firstname = name("firstname")
	in.lastname = name("lastname")

	in.email = strings.TrimSpace(p.str("email"))
	if in.email != "" {
		if _, err := mail.ParseAddress(in.email); err != nil {
			p.fail("email", "is.not.a.valid.email.address", "The parameter email is not a valid email address.", in.email)
		}
	}

	if create || p.has("officeId") {
		in.officeID = p.int("officeId")
		switch {
		case !p.has("officeId"):
			p.fail("officeId", "cannot.be.blank", "The parameter officeId is mandatory.", nil)
		case in.officeID <= 0:
			p.fail("officeId", "not.greater.than.zero", "The parameter officeId must be greater than 0.", in.officeID, 0)
		}
	}

	if create || p.has("roles") {
		in.roles = p.ids("roles")
		if len(in.roles) == 0 {
			p.fail("roles", "cannot.be.empty", "The parameter roles cannot be empty. You must select at least one role.", nil)
		}
	}

	in.isSelfService, _ = p.boolean("isSelfServiceUser")
	if p.has("clients") {
		in.clients = p.ids("clients")
		if create && !in.isSelfService {
			p.fail("clients", "not.supported.when.isSelfServiceUser.is.false",
				"The parameter clients is only supported with isSelfServiceUser true.", nil)
		}
	}

	sendPw, given := p.boolean("sendPasswordToEmail")
	in.sendPwToEmail = sendPw || (!given && create) // Fineract's default is true
	pw, repeat := p.str("password"), p.str("repeatPassword")
	switch {
	case create && in.sendPwToEmail:
		if in.email == "" {
			p.fail("email", "cannot.be.blank", "The parameter email is mandatory when sendPasswordToEmail is true.", nil)
		}
	case create || p.has("password") || p.has("repeatPassword"):
		switch {
		case pw == "":
			p.fail("password", "cannot.be.blank", "The parameter password is mandatory.", nil)
		case utf8.RuneCountInString(pw) > maxPasswordLength:
			p.fail("password", "exceeds.max.length", fmt.Sprintf("The parameter password exceeds max length of %d.", maxPasswordLength), nil, maxPasswordLength)
		case repeat == "":
			p.fail("repeatPassword", "cannot.be.blank", "The parameter repeatPassword is mandatory.", nil)
		case subtle.ConstantTimeCompare([]byte(pw), []byte(repeat)) != 1:
			p.fail("password", "not.equal.to.repeatPassword", "The parameters password and repeatPassword must be equal.", nil)
		}
		in.password = pw
	}

	if v, ok := p.boolean("enabled"); ok {
		in.enabled = v
	}
	in.pwNeverExpires, _ = p.boolean("passwordNeverExpires")
	in.resetPwAfterFirstLogin, _ = p.boolean("resetPasswordAfterFirstLogin")
	if p.has("staffId") {
		p.int("staffId")
	}
	if len(p.errs) > 0 {
		return nil, errValidation(p.errs...)
	}
	return in, nil
}

// checkReferences verifies the office, roles and clients a user names, in
// the order Fineract looks them up.
func (s *Server) checkReferences(in *userInput, selfService bool) *apiError {
	if in.present["officeId"] {
		if _, ok := s.offices[in.officeID]; !ok {
			return errNotFound("Office", "error.msg.office.id.invalid", in.officeID)
		}
	}
	for _, id := range in.roles {
		r, ok := s.roles[id]
		if !ok {
			return errNotFound("Role", "error.msg.role.id.invalid", id)
		}
		if r.IsSelfService && !selfService {
			return errDomainRule("error.msg.user.role.self.service.only",
				fmt.Sprintf("Role %s can only be given to self-service users.", r.Name), "roles", id)
		}
	}
	for _, id := range in.clients {
		if _, ok := s.clients[id]; !ok {
			return errNotFound("Client", "error.msg.client.id.invalid", id)
		}
	}
	return nil
}

// handleCreateUser serves POST /v1/users.
func (s *Server) handleCreateUser(r *http.Request, p *principal, body []byte) (any, *apiError) {
	in, aerr := parseUser(body, true)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := s.checkReferences(in, in.isSelfService); aerr != nil {
		return nil, aerr
	}
	u := &userRec{
		Username: in.username, Firstname: in.firstname, Lastname: in.lastname, Email: in.email,
		OfficeID: in.officeID, Roles: in.roles, IsSelfServiceUser: in.isSelfService, Clients: in.clients,
		Enabled: in.enabled, PasswordNeverExpires: in.pwNeverExpires,
		ResetPasswordAfterFirstLogin: in.resetPwAfterFirstLogin, CreatedAt: s.now(),
		perms: s.permsOf(in.roles),
	}
	pw := in.password
	if in.sendPwToEmail {
		// The password would be mailed; nobody here can know it.
		pw = randomID()
	}
	u.setPassword(pw)
	if !s.users.insert(u) {
		return nil, errDuplicateUsername(in.username)
	}
	s.stats.usersCreated.Add(1)
	resp := map[string]any{"id": fmt.Sprint(u.ID), "officeId": u.OfficeID, "resourceId": u.ID}
	if len(u.Clients) > 0 {
		resp["clientId"] = u.Clients[0]
	}
	return resp, nil
}

// handleUpdateUser serves PUT /v1/users/{id}.
func (s *Server) handleUpdateUser(r *http.Request, p *principal, body []byte) (any, *apiError) {
	id, aerr := pathID(r)
	if aerr != nil {
		return nil, aerr
	}
	old := s.users.byID(id)
	if old == nil {
		return nil, errNotFound("User", "error.msg.user.id.invalid", id)
	}
	in, aerr := parseUser(body, false)
	if aerr != nil {
		return nil, aerr
	}
	selfService := old.IsSelfServiceUser
	if in.present["isSelfServiceUser"] {
		selfService = in.isSelfService
	}
	if in.present["clients"] && !selfService {
		return nil, errValidation(field("validation.msg.user.clients.not.supported.when.isSelfServiceUser.is.false", "clients", nil,
			"The parameter clients is only supported with isSelfServiceUser true."))
	}
	if aerr := s.checkReferences(in, selfService); aerr != nil {
		return nil, aerr
	}
	u := *old // a new version; the stored one is never changed
	// changes lists what was set, as Fineract answers; never the password.
	changes := map[string]any{}
	set := func(param string, value any, apply func()) {
		if in.present[param] {
			apply()
			changes[param] = value
		}
	}
	set("username", in.username, func() { u.Username = in.username })
	set("firstname", in.firstname, func() { u.Firstname = in.firstname })
	set("lastname", in.lastname, func() { u.Lastname = in.lastname })
	set("email", in.email, func() { u.Email = in.email })
	set("officeId", in.officeID, func() { u.OfficeID = in.officeID })
	set("roles", in.roles, func() { u.Roles = in.roles; u.perms = s.permsOf(in.roles) })
	set("clients", in.clients, func() { u.Clients = in.clients })
	set("isSelfServiceUser", in.isSelfService, func() { u.IsSelfServiceUser = in.isSelfService })
	set("enabled", in.enabled, func() { u.Enabled = in.enabled })
	set("passwordNeverExpires", in.pwNeverExpires, func() { u.PasswordNeverExpires = in.pwNeverExpires })
	set("resetPasswordAfterFirstLogin", in.resetPwAfterFirstLogin, func() { u.ResetPasswordAfterFirstLogin = in.resetPwAfterFirstLogin })
	if in.password != "" {
		u.setPassword(in.password)
		changes["passwordEncoded"] = "[changed]"
	}
	if !s.users.replace(&u) {
		return nil, errDuplicateUsername(u.Username)
	}
	return map[string]any{"officeId": u.OfficeID, "resourceId": u.ID, "changes": changes}, nil
}

// userJSON is a user as GET /v1/users shows it.
type userJSON struct {
	ID                   int64        `json:"id"`
	Username             string       `json:"username"`
	OfficeID             int64        `json:"officeId"`
	OfficeName           string       `json:"officeName"`
	Firstname            string       `json:"firstname"`
	Lastname             string       `json:"lastname"`
	Email                string       `json:"email,omitempty"`
	PasswordNeverExpires bool         `json:"passwordNeverExpires"`
	SelectedRoles        []roleJSON   `json:"selectedRoles"`
	IsSelfServiceUser    bool         `json:"isSelfServiceUser"`
	Clients              []clientLink `json:"clients,omitempty"`
	Enabled              bool         `json:"enabled"`
}

type clientLink struct {
	ID          int64  `json:"id"`
	DisplayName string `json:"displayName"`
}

func (s *Server) userJSON(u *userRec) userJSON {
	j := userJSON{
		ID: u.ID, Username: u.Username, OfficeID: u.OfficeID, OfficeName: s.offices[u.OfficeID].Name,
		Firstname: u.Firstname, Lastname: u.Lastname, Email: u.Email,
		PasswordNeverExpires: u.PasswordNeverExpires, SelectedRoles: s.rolesJSON(u.Roles),
		IsSelfServiceUser: u.IsSelfServiceUser, Enabled: u.Enabled,
	}
	for _, c := range u.Clients {
		j.Clients = append(j.Clients, clientLink{ID: c, DisplayName: s.clients[c].DisplayName})
	}
	return j
}

// handleListUsers serves GET /v1/users.
func (s *Server) handleListUsers(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	users := s.users.list()
	out := make([]userJSON, len(users))
	for i, u := range users {
		out[i] = s.userJSON(u)
	}
	return out, nil
}

// handleGetUser serves GET /v1/users/{id}.
func (s *Server) handleGetUser(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	id, aerr := pathID(r)
	if aerr != nil {
		return nil, aerr
	}
	u := s.users.byID(id)
	if u == nil {
		return nil, errNotFound("User", "error.msg.user.id.invalid", id)
	}
	return s.userJSON(u), nil
}

// handleUserDetails serves GET /v1/userdetails: who the caller is.
func (s *Server) handleUserDetails(r *http.Request, p *principal, _ []byte) (any, *apiError) {
	u := p.user
	perms := make([]string, 0, len(u.perms))
	for perm := range u.perms {
		perms = append(perms, perm)
	}
	slices.Sort(perms)
	clients := u.Clients
	if clients == nil {
		clients = []int64{}
	}
	return map[string]any{
		"username":                          u.Username,
		"userId":                            u.ID,
		"authenticated":                     true,
		"officeId":                          u.OfficeID,
		"officeName":                        s.offices[u.OfficeID].Name,
		"roles":                             s.rolesJSON(u.Roles),
		"permissions":                       perms,
		"isSelfServiceUser":                 u.IsSelfServiceUser,
		"clients":                           clients,
		"shouldRenewPassword":               false,
		"isTwoFactorAuthenticationRequired": false,
	}, nil
}
