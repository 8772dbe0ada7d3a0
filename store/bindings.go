package store

import (
	"context"
	"fmt"
	"time"
)

// Binding authorises a CloudEvent source to order cards for one MBanq
// client, from one deposit account, with one card product.
type Binding struct {
	Source           string
	ClientID         int64
	SavingsAccountID int64
	CardProductID    int64
	CreatedAt        time.Time
}

// AddBinding creates a binding or updates the account and product of an
// existing one.
func (s *Store) AddBinding(ctx context.Context, b Binding) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO source_bindings (source, client_id, savings_account_id, card_product_id)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (source, client_id) DO UPDATE
		SET savings_account_id = EXCLUDED.savings_account_id,
		    card_product_id = EXCLUDED.card_product_id`,
		b.Source, b.ClientID, b.SavingsAccountID, b.CardProductID)
	if err != nil {
		return fmt.Errorf("adding binding: %w", err)
	}
	return nil
}

// RemoveBinding deletes a binding; ErrNotFound when there was none.
func (s *Store) RemoveBinding(ctx context.Context, source string, clientID int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM source_bindings WHERE source = $1 AND client_id = $2`, source, clientID)
	if err != nil {
		return fmt.Errorf("removing binding: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Bindings lists every binding, ordered by source and client.
func (s *Store) Bindings(ctx context.Context) ([]Binding, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT source, client_id, savings_account_id, card_product_id, created_at
		FROM source_bindings ORDER BY source, client_id`)
	if err != nil {
		return nil, fmt.Errorf("listing bindings: %w", err)
	}
	defer rows.Close()
	var out []Binding
	for rows.Next() {
		var b Binding
		if err := rows.Scan(&b.Source, &b.ClientID, &b.SavingsAccountID, &b.CardProductID, &b.CreatedAt); err != nil {
			return nil, fmt.Errorf("listing bindings: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// LookupBinding returns the binding of source to clientID, or ErrNotFound.
func (s *Store) LookupBinding(ctx context.Context, source string, clientID int64) (Binding, error) {
	var b Binding
	err := s.pool.QueryRow(ctx, `
		SELECT source, client_id, savings_account_id, card_product_id, created_at
		FROM source_bindings WHERE source = $1 AND client_id = $2`, cleanText(source), clientID).
		Scan(&b.Source, &b.ClientID, &b.SavingsAccountID, &b.CardProductID, &b.CreatedAt)
	if err != nil {
		return Binding{}, fmt.Errorf("looking up binding: %w", notFound(err))
	}
	return b, nil
}

// SourceHasBindings reports whether source is bound to any client, which
// tells an unknown ERP apart from a known one asking for a client it does
// not own.
func (s *Store) SourceHasBindings(ctx context.Context, source string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM source_bindings WHERE source = $1)`, cleanText(source)).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("looking up source: %w", err)
	}
	return ok, nil
}
