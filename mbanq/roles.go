package mbanq

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// Role is a role of the tenant.
type Role struct {
	ID          int64
	Name        string
	Description string
	Disabled    bool
	// IsSelfService marks the role of self-service users.
	IsSelfService bool
}

type roleWire struct {
	ID            flexInt  `json:"id"`
	Name          string   `json:"name"`
	Description   string   `json:"description"`
	Disabled      flexBool `json:"disabled"`
	IsSelfService flexBool `json:"isSelfService"`
}

func rolesFromWire(ws []roleWire) []Role {
	if ws == nil {
		return nil
	}
	roles := make([]Role, len(ws))
	for i, w := range ws {
		roles[i] = Role{
			ID:            int64(w.ID),
			Name:          w.Name,
			Description:   w.Description,
			Disabled:      bool(w.Disabled),
			IsSelfService: bool(w.IsSelfService),
		}
	}
	return roles
}

// Roles lists the tenant's roles (admin only).
func (s *Session) Roles(ctx context.Context) ([]Role, error) {
	var ws []roleWire
	if err := s.call(ctx, request{op: "list roles", method: http.MethodGet, path: "/v1/roles", list: true}, &ws); err != nil {
		return nil, err
	}
	return rolesFromWire(ws), nil
}

// ErrNoSelfServiceRole is returned by SelfServiceRoleID when the tenant has
// no enabled role that looks like the self-service role.
var ErrNoSelfServiceRole = errors.New("mbanq: no self-service role found; set the role id explicitly")

// SelfServiceRoleID finds the role to give new self-service users, because
// its id differs per tenant. An enabled role flagged isSelfService wins;
// otherwise an enabled role named like "Self Service User" (case, spaces,
// dashes and underscores ignored). The result does not change while the
// process runs; callers should cache it.
func (s *Session) SelfServiceRoleID(ctx context.Context) (int64, error) {
	roles, err := s.Roles(ctx)
	if err != nil {
		return 0, err
	}
	return selfServiceRole(roles)
}

func selfServiceRole(roles []Role) (int64, error) {
	for _, r := range roles {
		if r.IsSelfService && !r.Disabled {
			return r.ID, nil
		}
	}
	for _, r := range roles {
		if !r.Disabled && strings.HasPrefix(normaliseRoleName(r.Name), "selfservice") {
			return r.ID, nil
		}
	}
	return 0, ErrNoSelfServiceRole
}

func normaliseRoleName(name string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '_':
			return -1
		}
		return r
	}, strings.ToLower(name))
}
