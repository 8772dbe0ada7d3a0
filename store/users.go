package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
	// SealingKey is the fingerprint (secret.KeyID) of the key that sealed
	// PasswordSealed; "" when unknown (sealed before it was recorded).
	SealingKey  string
	MBanqUserID int64 // 0 while provisioning
	Status      string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// SealingContext is the additional data a user's password is sealed with.
// It binds the ciphertext to its row, so a ciphertext moved to another
// client's row does not open. Whoever seals or opens a password uses it.
func SealingContext(clientID int64, username string) []byte {
	return []byte(fmt.Sprintf("cardbridge/self-service-user/v1:%d:%s", clientID, username))
}

const userColumns = `client_id, username, password_sealed, coalesce(sealing_key, ''), coalesce(mbanq_user_id, 0), status, created_at, updated_at`

func scanUser(row interface{ Scan(...any) error }) (SelfServiceUser, error) {
	var u SelfServiceUser
	err := row.Scan(&u.ClientID, &u.Username, &u.PasswordSealed, &u.SealingKey, &u.MBanqUserID, &u.Status, &u.CreatedAt, &u.UpdatedAt)
	return u, err
}

// SelfServiceUser returns the user of a client, or ErrNotFound.
func (s *Store) SelfServiceUser(caller context.Context, clientID int64) (SelfServiceUser, error) {
	ctx, cancel := bound(caller)
	defer cancel()
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM self_service_users WHERE client_id = $1`, clientID))
	if err != nil {
		return SelfServiceUser{}, fmt.Errorf("reading self-service user: %w", notFound(unanswered(caller, err)))
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

// RecordProvisioning records the intent to create u at MBanq, with the
// fingerprint of the key that sealed its password (u.SealingKey). When
// another process recorded one for the same client first, that row wins and
// is returned instead, so two processes never provision two users.
func (s *Store) RecordProvisioning(caller context.Context, u SelfServiceUser) (SelfServiceUser, error) {
	ctx, cancel := bound(caller)
	defer cancel()
	_, err := s.pool.Exec(ctx, `
		INSERT INTO self_service_users (client_id, username, password_sealed, sealing_key, status)
		VALUES ($1, $2, $3, NULLIF($4, ''), 'provisioning')
		ON CONFLICT (client_id) DO NOTHING`, u.ClientID, u.Username, u.PasswordSealed, u.SealingKey)
	if err != nil {
		return SelfServiceUser{}, fmt.Errorf("recording self-service user: %w", unanswered(caller, err))
	}
	return s.SelfServiceUser(caller, u.ClientID)
}

// ActivateUser records the MBanq id of a provisioned user.
func (s *Store) ActivateUser(caller context.Context, clientID, mbanqUserID int64) error {
	ctx, cancel := bound(caller)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `
		UPDATE self_service_users SET mbanq_user_id = $2, status = 'active', updated_at = now()
		WHERE client_id = $1`, clientID, mbanqUserID)
	if err != nil {
		return fmt.Errorf("activating self-service user: %w", unanswered(caller, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("activating self-service user: %w", ErrNotFound)
	}
	return nil
}

// ResealPassword replaces a user's sealed password old with sealed, made
// under the key whose fingerprint is keyID, for key rotation. sealed may be
// old itself, to record the key of a password already sealed under the
// current one.
//
// It is a compare-and-swap: it writes only while the row still holds old,
// and reports whether it did. False means another process resealed the
// password meanwhile (or the row is gone); that value stands, since ours
// was made from a ciphertext that is no longer there.
func (s *Store) ResealPassword(ctx context.Context, clientID int64, old, sealed []byte, keyID string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE self_service_users SET password_sealed = $3, sealing_key = NULLIF($4, ''), updated_at = now()
		WHERE client_id = $1 AND password_sealed = $2`, clientID, old, sealed, keyID)
	if err != nil {
		return false, fmt.Errorf("resealing password of client %d: %w", clientID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// SealingKeyCounts counts the self-service users by the fingerprint of the
// key that sealed their password ("" for unknown). One sequential scan of a
// table with a row per client, cheap enough for every metrics scrape.
func (s *Store) SealingKeyCounts(ctx context.Context) (map[string]int64, error) {
	return s.countBy(ctx, "counting sealed passwords by key",
		`SELECT coalesce(sealing_key, ''), count(*) FROM self_service_users GROUP BY 1`)
}

// SealedPasswordCounts counts the passwords recorded as sealed under the
// current key (Options.SealingKey) and the others: sealed under an older
// key, or under a key not recorded. Once previous is 0 the old keys can go.
func (s *Store) SealedPasswordCounts(ctx context.Context) (current, previous int64, err error) {
	if s.sealingKey == "" {
		return 0, 0, errors.New("counting sealed passwords: the store was not told the current key (store.Options.SealingKey)")
	}
	byKey, err := s.SealingKeyCounts(ctx)
	if err != nil {
		return 0, 0, err
	}
	for k, n := range byKey {
		if k == s.sealingKey {
			current += n
		} else {
			previous += n
		}
	}
	return current, previous, nil
}

// UsersNotSealedUnder lists, by client, the users whose password is not
// recorded as sealed under the key with fingerprint keyID: those sealed
// under another key or under an unknown one, which a rotation reseals.
func (s *Store) UsersNotSealedUnder(ctx context.Context, keyID string) ([]SelfServiceUser, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM self_service_users
		WHERE sealing_key IS DISTINCT FROM $1 ORDER BY client_id`, keyID)
	if err == nil {
		var out []SelfServiceUser
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (SelfServiceUser, error) { return scanUser(r) })
		if err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("listing passwords not sealed under the current key: %w", err)
}
