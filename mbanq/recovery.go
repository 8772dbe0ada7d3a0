package mbanq

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// ErrUserNotFound is returned by FindUserByUsername when no user has the
// username.
var ErrUserNotFound = errors.New("mbanq: user not found")

// ErrUserMismatch is returned by RecoverSelfServiceUser when the existing
// user with the username is not a self-service user of the expected clients.
// Taking it over could hand another customer's access to the caller, so the
// helper refuses; an operator has to look.
var ErrUserMismatch = errors.New("mbanq: existing user is not the expected self-service user")

// FindUserByUsername looks a user up by username (admin only). Fineract has
// no filter for it, so it lists all users.
func (s *Session) FindUserByUsername(ctx context.Context, username string) (User, error) {
	users, err := s.ListUsers(ctx)
	if err != nil {
		return User{}, err
	}
	for _, u := range users {
		if u.Username == username {
			return u, nil
		}
	}
	return User{}, fmt.Errorf("finding user %q: %w", username, ErrUserNotFound)
}

// ResetPassword sets a user's password (admin only).
func (s *Session) ResetPassword(ctx context.Context, userID int64, password secret.String) error {
	return s.UpdateUser(ctx, userID, UpdateUserRequest{Password: password})
}

// RecoverSelfServiceUser handles a duplicate username on CreateUser: the
// user was most likely created by an earlier attempt whose answer, or whose
// record of the password, was lost. It finds the user, checks that it is a
// self-service user whose clients are exactly req.Clients (a user that may
// also act for another client is not ours to take over), sets its password
// to req.Password and returns its id.
func (s *Session) RecoverSelfServiceUser(ctx context.Context, req CreateUserRequest) (int64, error) {
	u, err := s.FindUserByUsername(ctx, req.Username)
	if err != nil {
		return 0, err
	}
	if !u.IsSelfServiceUser {
		return 0, fmt.Errorf("recovering user %q (id %d): not a self-service user: %w", u.Username, u.ID, ErrUserMismatch)
	}
	for _, c := range req.Clients {
		if !slices.Contains(u.Clients, c) {
			return 0, fmt.Errorf("recovering user %q (id %d): no access to client %d: %w", u.Username, u.ID, c, ErrUserMismatch)
		}
	}
	for _, c := range u.Clients {
		if !slices.Contains(req.Clients, c) {
			return 0, fmt.Errorf("recovering user %q (id %d): it also acts for client %d: %w", u.Username, u.ID, c, ErrUserMismatch)
		}
	}
	if err := s.ResetPassword(ctx, u.ID, req.Password); err != nil {
		return 0, err
	}
	return u.ID, nil
}

// EnsureSelfServiceUser creates the self-service user described by req, or,
// when the username exists already, recovers it with RecoverSelfServiceUser.
// Either way the user ends up with req.Password; the id is returned.
func (s *Session) EnsureSelfServiceUser(ctx context.Context, req CreateUserRequest, idempotencyKey string) (int64, error) {
	res, err := s.CreateUser(ctx, req, idempotencyKey)
	if err == nil {
		return res.UserID, nil
	}
	if !IsDuplicateUsername(err) {
		return 0, err
	}
	s.c.log.InfoContext(ctx, "mbanq username exists, recovering the user", "username", req.Username)
	return s.RecoverSelfServiceUser(ctx, req)
}
