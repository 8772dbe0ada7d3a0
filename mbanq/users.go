package mbanq

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// UserDetails describes the user a Session acts as (GET /v1/userdetails).
type UserDetails struct {
	UserID            int64
	Username          string
	OfficeID          int64
	OfficeName        string
	Roles             []Role
	Permissions       []string
	IsSelfServiceUser bool
	// Clients are the ids of the clients a self-service user may act for,
	// when MBanq lists them.
	Clients []int64
}

type userDetailsWire struct {
	UserID            flexInt    `json:"userId"`
	Username          string     `json:"username"`
	OfficeID          flexInt    `json:"officeId"`
	OfficeName        string     `json:"officeName"`
	Roles             []roleWire `json:"roles"`
	Permissions       []string   `json:"permissions"`
	IsSelfServiceUser flexBool   `json:"isSelfServiceUser"`
	Clients           clientRefs `json:"clients"`
}

// UserDetails returns who the Session's user is, its roles and permissions.
func (s *Session) UserDetails(ctx context.Context) (UserDetails, error) {
	var w userDetailsWire
	if err := s.call(ctx, request{op: "get user details", method: http.MethodGet, path: "/v1/userdetails"}, &w); err != nil {
		return UserDetails{}, err
	}
	return UserDetails{
		UserID:            int64(w.UserID),
		Username:          w.Username,
		OfficeID:          int64(w.OfficeID),
		OfficeName:        w.OfficeName,
		Roles:             rolesFromWire(w.Roles),
		Permissions:       w.Permissions,
		IsSelfServiceUser: bool(w.IsSelfServiceUser),
		Clients:           w.Clients,
	}, nil
}

// CreateUserRequest is the body of POST /v1/users. For a self-service user
// set IsSelfServiceUser and Clients; with SendPasswordToEmail false (the
// usual case for a machine user) Password is required.
type CreateUserRequest struct {
	Username  string
	Firstname string // non-blank, at most 100 characters
	Lastname  string // non-blank, at most 100 characters
	Email     string
	OfficeID  int64   // > 0
	Roles     []int64 // non-empty
	// IsSelfServiceUser limits the user's data scope to Clients.
	IsSelfServiceUser bool
	Clients           []int64
	// SendPasswordToEmail makes MBanq generate the password and mail it;
	// Password is then ignored.
	SendPasswordToEmail          bool
	Password                     secret.String
	ResetPasswordAfterFirstLogin bool
	PasswordNeverExpires         bool
}

// MarshalJSON writes the wire form. It is the one place the password is
// revealed, into the body sent to MBanq; the body is never logged.
func (r CreateUserRequest) MarshalJSON() ([]byte, error) {
	w := struct {
		Username                     string    `json:"username"`
		Firstname                    string    `json:"firstname"`
		Lastname                     string    `json:"lastname"`
		Email                        string    `json:"email,omitempty"`
		OfficeID                     int64     `json:"officeId"`
		Roles                        idStrings `json:"roles"`
		IsSelfServiceUser            bool      `json:"isSelfServiceUser"`
		Clients                      []int64   `json:"clients,omitempty"`
		SendPasswordToEmail          bool      `json:"sendPasswordToEmail"`
		Password                     string    `json:"password,omitempty"`
		RepeatPassword               string    `json:"repeatPassword,omitempty"`
		ResetPasswordAfterFirstLogin bool      `json:"resetPasswordAfterFirstLogin"`
		PasswordNeverExpires         bool      `json:"passwordNeverExpires,omitempty"`
	}{
		Username:                     r.Username,
		Firstname:                    r.Firstname,
		Lastname:                     r.Lastname,
		Email:                        r.Email,
		OfficeID:                     r.OfficeID,
		Roles:                        idStrings(r.Roles),
		IsSelfServiceUser:            r.IsSelfServiceUser,
		Clients:                      r.Clients,
		SendPasswordToEmail:          r.SendPasswordToEmail,
		ResetPasswordAfterFirstLogin: r.ResetPasswordAfterFirstLogin,
		PasswordNeverExpires:         r.PasswordNeverExpires,
	}
	if !r.SendPasswordToEmail {
		w.Password = r.Password.Reveal()
		w.RepeatPassword = r.Password.Reveal()
	}
	return json.Marshal(w)
}

// CreateUserResponse is the answer of POST /v1/users.
type CreateUserResponse struct {
	UserID   int64 // resourceId
	OfficeID int64
	ClientID int64 // set by MBanq for a self-service user of one client
}

type createUserWire struct {
	ID         flexInt `json:"id"`
	ResourceID flexInt `json:"resourceId"`
	OfficeID   flexInt `json:"officeId"`
	ClientID   flexInt `json:"clientId"`
}

// CreateUser creates a user (admin only). idempotencyKey must identify the
// logical operation (e.g. derived from the request that needs the user) so
// that a retry after a lost answer is not a second creation. A username that
// exists already fails with an error for which IsDuplicateUsername is true;
// see RecoverSelfServiceUser.
func (s *Session) CreateUser(ctx context.Context, req CreateUserRequest, idempotencyKey string) (CreateUserResponse, error) {
	var w createUserWire
	err := s.call(ctx, request{op: "create user", method: http.MethodPost, path: "/v1/users", body: req, idemKey: idempotencyKey}, &w)
	if err != nil {
		return CreateUserResponse{}, err
	}
	id := int64(w.ResourceID)
	if id == 0 {
		id = int64(w.ID)
	}
	return CreateUserResponse{UserID: id, OfficeID: int64(w.OfficeID), ClientID: int64(w.ClientID)}, nil
}

// User is a user as listed by GET /v1/users.
type User struct {
	ID                int64
	Username          string
	Firstname         string
	Lastname          string
	Email             string
	OfficeID          int64
	OfficeName        string
	IsSelfServiceUser bool
	Roles             []Role
	Clients           []int64
}

type userWire struct {
	ID                flexInt    `json:"id"`
	Username          string     `json:"username"`
	Firstname         string     `json:"firstname"`
	Lastname          string     `json:"lastname"`
	Email             string     `json:"email"`
	OfficeID          flexInt    `json:"officeId"`
	OfficeName        string     `json:"officeName"`
	IsSelfServiceUser flexBool   `json:"isSelfServiceUser"`
	SelectedRoles     []roleWire `json:"selectedRoles"`
	Clients           clientRefs `json:"clients"`
}

func (w userWire) user() User {
	return User{
		ID:                int64(w.ID),
		Username:          w.Username,
		Firstname:         w.Firstname,
		Lastname:          w.Lastname,
		Email:             w.Email,
		OfficeID:          int64(w.OfficeID),
		OfficeName:        w.OfficeName,
		IsSelfServiceUser: bool(w.IsSelfServiceUser),
		Roles:             rolesFromWire(w.SelectedRoles),
		Clients:           w.Clients,
	}
}

// GetUser returns one user (admin only).
func (s *Session) GetUser(ctx context.Context, id int64) (User, error) {
	var w userWire
	if err := s.call(ctx, request{op: "get user", method: http.MethodGet, path: "/v1/users/" + strconv.FormatInt(id, 10)}, &w); err != nil {
		return User{}, err
	}
	return w.user(), nil
}

// ListUsers returns all users (admin only).
func (s *Session) ListUsers(ctx context.Context) ([]User, error) {
	var ws []userWire
	if err := s.call(ctx, request{op: "list users", method: http.MethodGet, path: "/v1/users", list: true}, &ws); err != nil {
		return nil, err
	}
	users := make([]User, len(ws))
	for i, w := range ws {
		users[i] = w.user()
	}
	return users, nil
}

// UpdateUserRequest is the body of PUT /v1/users/{id}; zero fields are left
// unchanged.
type UpdateUserRequest struct {
	Firstname string
	Lastname  string
	Email     string
	Roles     []int64
	Clients   []int64
	// Password, when set, replaces the password (repeatPassword is sent
	// equal to it).
	Password secret.String
}

// MarshalJSON writes the wire form, revealing the password into the body.
func (r UpdateUserRequest) MarshalJSON() ([]byte, error) {
	w := struct {
		Firstname      string    `json:"firstname,omitempty"`
		Lastname       string    `json:"lastname,omitempty"`
		Email          string    `json:"email,omitempty"`
		Roles          idStrings `json:"roles,omitempty"`
		Clients        []int64   `json:"clients,omitempty"`
		Password       string    `json:"password,omitempty"`
		RepeatPassword string    `json:"repeatPassword,omitempty"`
	}{
		Firstname: r.Firstname,
		Lastname:  r.Lastname,
		Email:     r.Email,
		Roles:     idStrings(r.Roles),
		Clients:   r.Clients,
	}
	if !r.Password.IsZero() {
		w.Password = r.Password.Reveal()
		w.RepeatPassword = r.Password.Reveal()
	}
	return json.Marshal(w)
}

// UpdateUser changes a user (admin only). It is idempotent: repeating it
// sets the same values.
func (s *Session) UpdateUser(ctx context.Context, id int64, req UpdateUserRequest) error {
	return s.call(ctx, request{op: "update user", method: http.MethodPut, path: fmt.Sprintf("/v1/users/%d", id), body: req}, nil)
}

// clientRefs decodes the clients of a user: ids, or objects with an id.
type clientRefs []int64

func (c *clientRefs) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make([]int64, 0, len(raw))
	for _, r := range raw {
		var obj struct {
			ID flexInt `json:"id"`
		}
		if len(r) > 0 && r[0] == '{' {
			if err := json.Unmarshal(r, &obj); err != nil {
				return err
			}
			out = append(out, int64(obj.ID))
			continue
		}
		var id flexInt
		if err := id.UnmarshalJSON(r); err != nil {
			return err
		}
		out = append(out, int64(id))
	}
	*c = out
	return nil
}
