package store

import (
	"context"
	"fmt"
	"time"
)

// User provisioning states.
const (
	UserProvisioning = "provisioning"
	UserActive       = "active"
)

// SelfServiceUser is the MBanq self-service user cardbridge acts as for one
// client. PasswordSealed is the password encrypted by the caller (see
// package secret); the store never sees it in the clear.
type SelfServiceUser struct {
	ClientID       int64
	Username       string
	PasswordSealed []byte
	MBanqUserID    int64 // 0 while provisioning
	Status         string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

const userColumns = `client_id, username, password_sealed, coalesce(mbanq_user_id, 0), status, created_at, updated_at`

func scanUser(row interface{ Scan(...any) error }) (SelfServiceUser, error) {
	var u SelfServiceUser
	err := row.Scan(&u.ClientID, &u.Username, &u.PasswordSealed, &u.MBanqUserID, &u.Status, &u.CreatedAt, &u.UpdatedAt)
	return u, err
}

// SelfServiceUser returns the user of a client, or ErrNotFound.
func (s *Store) SelfServiceUser(ctx context.Context, clientID int64) (SelfServiceUser, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM self_service_users WHERE client_id = $1`, clientID))
	if err != nil {
		return SelfServiceUser{}, fmt.Errorf("reading self-service user: %w", notFound(err))
	}
	return u, nil
}

// SelfServiceUsers lists every user, for operators.
func (s *Store) SelfServiceUsers(ctx context.Context) ([]SelfServiceUser, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM self_service_users ORDER BY client_id`)
	if err != nil {
		return nil, fmt.Errorf("listing self-service users: %w", err)
	}
	defer rows.Close()
	var out []SelfServiceUser
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("listing self-service users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// RecordProvisioning records the intent to create u at MBanq. When another
// process recorded one for the same client first, that row wins and is
// returned instead, so two processes never provision two users.
func (s *Store) RecordProvisioning(ctx context.Context, u SelfServiceUser) (SelfServiceUser, error) {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO self_service_users (client_id, username, password_sealed, status)
		VALUES ($1, $2, $3, 'provisioning')
		ON CONFLICT (client_id) DO NOTHING`, u.ClientID, u.Username, u.PasswordSealed)
	if err != nil {
		return SelfServiceUser{}, fmt.Errorf("recording self-service user: %w", err)
	}
	return s.SelfServiceUser(ctx, u.ClientID)
}

// ActivateUser records the MBanq id of a provisioned user.
func (s *Store) ActivateUser(ctx context.Context, clientID, mbanqUserID int64) error {
	tag, err := s.pool.Exec(ctx, `
		UPDATE self_service_users SET mbanq_user_id = $2, status = 'active', updated_at = now()
		WHERE client_id = $1`, clientID, mbanqUserID)
	if err != nil {
		return fmt.Errorf("activating self-service user: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("activating self-service user: %w", ErrNotFound)
	}
	return nil
}

// ResealPassword replaces a user's sealed password, for key rotation.
func (s *Store) ResealPassword(ctx context.Context, clientID int64, sealed []byte) error {
	_, err := s.pool.Exec(ctx, `UPDATE self_service_users SET password_sealed = $2, updated_at = now() WHERE client_id = $1`, clientID, sealed)
	if err != nil {
		return fmt.Errorf("resealing password: %w", err)
	}
	return nil
}
