package bench

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

// The baseline's tables copy the shape of the inbox and the outbox so that
// it measures the same commit; this keeps the copy from drifting when a
// migration changes them.
func TestBaselineTablesMatchTheMigratedOnes(t *testing.T) {
	s := testenv.Store(t)
	ctx := context.Background()
	_, err := s.Pool().Exec(ctx, baselineDDL)
	require.NoError(t, err)
	columns := func(table string) []string {
		rows, err := s.Pool().Query(ctx, `
			SELECT column_name || ' ' || data_type || ' ' || is_nullable FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position`, table)
		require.NoError(t, err)
		var out []string
		for rows.Next() {
			var c string
			require.NoError(t, rows.Scan(&c))
			out = append(out, c)
		}
		require.NoError(t, rows.Err())
		return out
	}
	for _, table := range []string{"processed_requests", "outbox"} {
		require.NotEmpty(t, columns(table))
		require.Equal(t, columns(table), columns("baseline_"+table), table)
	}
}
