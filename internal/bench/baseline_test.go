package bench

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

// The baseline's tables copy the shape of the inbox and the outbox so that
// it measures the same commit; this keeps the copy from drifting when a
// migration changes them.
func TestBaselineTablesMatchTheMigratedOnes(t *testing.T) {
	t.Parallel()
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

// The baseline commits every request it is asked for, in tables it drops
// afterwards, and reports the CPU it cost; when Postgres runs on this
// machine, its share cannot be zero.
func TestBaselineCommitsEveryRequestAndCountsPostgresCPU(t *testing.T) {
	t.Parallel()
	dbURL := testenv.DatabaseURL(t)
	bl, err := runBaseline(context.Background(), dbURL, 2000, 4)
	require.NoError(t, err)
	require.Equal(t, 2000, bl.Requests)
	require.Equal(t, 4, bl.Conns)
	require.Positive(t, bl.PerSecond)
	require.NotNil(t, bl.CPU, "CPU is read from /proc on Linux")
	if len(readCommandCPU("postgres")) > 0 { // Postgres runs on this machine
		require.Positive(t, bl.CPU.PostgresMicrosPerRq)
		require.GreaterOrEqual(t, bl.CPU.MachineMicrosPerRq, bl.CPU.PostgresMicrosPerRq,
			"the machine's CPU includes Postgres's")
	}

	conn, err := pgx.Connect(context.Background(), dbURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var left int
	require.NoError(t, conn.QueryRow(context.Background(),
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&left))
	require.Zero(t, left, "the baseline drops its tables")
}

func TestCPUReportPerRequest(t *testing.T) {
	t.Parallel()
	at := time.Now()
	a := cpuSnapshot{at: at, machineOK: true, machine: machineCPU{busy: 10 * time.Second, total: 40 * time.Second},
		self: time.Second, postgres: map[int]time.Duration{1: time.Second, 2: 0},
		procs: map[int]time.Duration{10: 2 * time.Second, 11: 0}, instances: map[int]bool{10: true}}
	b := cpuSnapshot{at: at.Add(2 * time.Second), machineOK: true, machine: machineCPU{busy: 13 * time.Second, total: 44 * time.Second},
		self: 1500 * time.Millisecond,
		// Backend 3 started during the run and counts from zero.
		postgres: map[int]time.Duration{1: 1200 * time.Millisecond, 2: 100 * time.Millisecond, 3: 200 * time.Millisecond},
		procs:    map[int]time.Duration{10: 3500 * time.Millisecond, 11: 400 * time.Millisecond}, instances: map[int]bool{10: true}}
	rep := cpuReport(a, b, 1000)
	require.NotNil(t, rep)
	require.InDelta(t, 1.5, rep.Busy, 1e-9)
	require.InDelta(t, 0.75, rep.Cardbridge, 1e-9)
	require.InDelta(t, 0.2, rep.Sandbox, 1e-9)
	require.InDelta(t, 0.25, rep.Postgres, 1e-9)
	require.InDelta(t, 1500, rep.CardbridgeMicrosPerRq, 1e-6)
	require.InDelta(t, 500, rep.PostgresMicrosPerRq, 1e-6)
	require.InDelta(t, 3000, rep.MachineMicrosPerRq, 1e-6)
}
