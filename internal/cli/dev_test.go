package cli

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

// devRun is a `cardbridge dev` running in the test's process.
type devRun struct {
	out, errOut testenv.LogBuffer
	cancel      context.CancelFunc
	done        chan int
}

func startDev(t *testing.T, dbURL string, args ...string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{cancel: cancel, done: make(chan int, 1)}
	env := Env{Getenv: func(k string) string {
		if k == "DATABASE_URL" {
			return dbURL
		}
		return ""
	}, Stdout: &d.out, Stderr: &d.errOut}
	go func() {
		d.done <- Main(ctx, append([]string{"dev", "--demo=false", "--nats-port", "0", "--sandbox-addr", "127.0.0.1:0"}, args...), env)
	}()
	t.Cleanup(func() {
		cancel()
		<-d.done
	})
	return d
}

// exit waits for a dev that must fail at start.
func (d *devRun) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-d.done:
		d.done <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("cardbridge dev did not stop; stdout:\n%s\nstderr:\n%s", d.out.String(), d.errOut.String())
		return 0
	}
}

var healthLine = regexp.MustCompile(`health\s+http://(\S+)/readyz`)

// A second dev on the same database is refused before it touches anything,
// and a port that is taken is named with its flag, again before anything
// is touched: the first dev keeps running with its schema whole.
func TestDevRefusesToStartOverAnotherDev(t *testing.T) {
	t.Parallel()
	dbURL := testenv.Database(t)
	first := startDev(t, dbURL, "--http-addr", "127.0.0.1:0")
	var health string
	require.Eventually(t, func() bool {
		m := healthLine.FindStringSubmatch(first.out.String())
		if m != nil {
			health = m[1]
		}
		return m != nil
	}, 60*time.Second, 20*time.Millisecond, "the first dev starts; stderr:\n%s", first.errOut.String())
	ready := func() int {
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Eventually(t, func() bool { return ready() == http.StatusOK }, 30*time.Second, 20*time.Millisecond)

	second := startDev(t, dbURL, "--http-addr", "127.0.0.1:0")
	require.Equal(t, 1, second.exit(t))
	require.Contains(t, second.errOut.String(), "another cardbridge dev is running on this database")
	require.Equal(t, http.StatusOK, ready(), "the first dev still works")

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var bindings int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM cardbridge_dev.source_bindings").Scan(&bindings))
	require.Equal(t, 1, bindings, "the first dev's schema is whole")

	// A dev on another database, on the first dev's HTTP port.
	other := testenv.Database(t)
	clash := startDev(t, other, "--http-addr", health)
	require.Equal(t, 1, clash.exit(t))
	require.Contains(t, clash.errOut.String(), "--http-addr")
	otherConn, err := pgx.Connect(ctx, other)
	require.NoError(t, err)
	defer otherConn.Close(ctx)
	var schemas int
	require.NoError(t, otherConn.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = 'cardbridge_dev'").Scan(&schemas))
	require.Zero(t, schemas, "nothing was created before the port was found taken")
}
