package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Binding authorises a CloudEvent source to order cards for one MBanq
// client, from one deposit account, with one card product.
type Binding struct {
	Source           string
	ClientID         int64
	SavingsAccountID int64
	CardProductID    int64
	// Publisher is the NATS identity that alone may speak for Source: its
	// requests must arrive on the request subject followed by
	// ".<Publisher>". Empty trusts whatever publishes on the request
	// subject (a NATS closed to all but trusted ERPs).
	Publisher string
	CreatedAt time.Time
}

// ErrPublisherMismatch is returned by AddBinding when another binding of
// the source names another publisher: a source has one identity.
var ErrPublisherMismatch = errors.New("another binding of this source names another publisher; a source speaks through one NATS identity")

// AddBinding creates a binding or updates the account, product and
// publisher of an existing one. A binding given no publisher takes the one
// its source already has: protection is never dropped by omission (remove
// the source's bindings to drop it).
func (s *Store) AddBinding(ctx context.Context, b Binding) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// One source, one publisher: the source is locked, so that two
		// operators cannot give it two.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('cardbridge binding ' || $1, 0))`, b.Source); err != nil {
			return fmt.Errorf("adding binding: %w", err)
		}
		var current *string
		var since *time.Time
		err := tx.QueryRow(ctx, `SELECT publisher, publisher_since FROM source_bindings
			WHERE source = $1 AND publisher IS NOT NULL LIMIT 1`, b.Source).Scan(&current, &since)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("adding binding: %w", err)
		}
		switch {
		case current != nil && b.Publisher != "" && b.Publisher != *current:
			return fmt.Errorf("adding binding: %w", ErrPublisherMismatch)
		case current != nil:
			b.Publisher = *current
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO source_bindings (source, client_id, savings_account_id, card_product_id, publisher, publisher_since)
			VALUES ($1, $2, $3, $4, nullif($5, ''), CASE WHEN $5 = '' THEN NULL ELSE coalesce($6, now()) END)
			ON CONFLICT (source, client_id) DO UPDATE
			SET savings_account_id = EXCLUDED.savings_account_id,
			    card_product_id = EXCLUDED.card_product_id,
			    publisher = EXCLUDED.publisher, publisher_since = EXCLUDED.publisher_since`,
			b.Source, b.ClientID, b.SavingsAccountID, b.CardProductID, b.Publisher, since)
		if err != nil {
			return fmt.Errorf("adding binding: %w", err)
		}
		if b.Publisher == "" {
			return nil
		}
		// The source's other bindings (made before it had a publisher)
		// take it too: otherwise removing this one would silently open
		// the source again to whatever publishes on the contract's subject.
		_, err = tx.Exec(ctx, `UPDATE source_bindings o SET publisher = n.publisher, publisher_since = n.publisher_since
			FROM source_bindings n WHERE n.source = $1 AND n.client_id = $2 AND o.source = $1 AND o.publisher IS NULL`,
			b.Source, b.ClientID)
		if err != nil {
			return fmt.Errorf("adding binding: %w", err)
		}
		return nil
	})
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
		SELECT source, client_id, savings_account_id, card_product_id, coalesce(publisher, ''), created_at
		FROM source_bindings ORDER BY source, client_id`)
	if err != nil {
		return nil, fmt.Errorf("listing bindings: %w", err)
	}
	defer rows.Close()
	var out []Binding
	for rows.Next() {
		var b Binding
		if err := rows.Scan(&b.Source, &b.ClientID, &b.SavingsAccountID, &b.CardProductID, &b.Publisher, &b.CreatedAt); err != nil {
			return nil, fmt.Errorf("listing bindings: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}
