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
