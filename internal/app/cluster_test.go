package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// On a 3-server cluster cardbridge's streams are replicated, and /readyz
// says when they cannot be used: with 2 of the 3 servers crashed no
// stream has a leader, though the connection to NATS is up; with one back,
// a leader is elected and the process is ready again.
func TestReadyzReportsStreamsWithoutALeader(t *testing.T) {
	c := testenv.StartNATSCluster(t, 3)
	seed := sandbox.DefaultSeed()
	bank := httptest.NewServer(sandbox.New(seed))
	t.Cleanup(bank.Close)
	cfg := testenv.Config(t, c.URL(), bank.URL, seed)
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := app.Start(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	p := &process{svc: svc, logs: logs}

	status, checks := p.readyz(t)
	require.Equal(t, http.StatusOK, status, checks)
	require.Equal(t, "ok", checks["jetstream"])
	_, js := testenv.JetStream(t, c.URL())
	for _, name := range []string{"ERP", "CARDS"} {
		st, err := js.Stream(context.Background(), name)
		require.NoError(t, err)
		require.Equal(t, 3, st.CachedInfo().Config.Replicas, "%s replicated by default", name)
	}

	c.Kill("n1")
	c.Kill("n2")
	var last map[string]string
	require.Eventually(t, func() bool {
		status, checks := p.readyz(t)
		last = checks
		return status == http.StatusServiceUnavailable && checks["nats"] == "ok"
	}, 30*time.Second, 50*time.Millisecond, "not ready while a stream has no leader, though NATS is connected")
	require.NotEqual(t, "ok", last["jetstream"])
	t.Logf("first 503: %v", last)
	// A leader that lost its quorum may answer for a while before it
	// steps down; then both streams are reported.
	require.Eventually(t, func() bool {
		status, checks := p.readyz(t)
		last = checks
		return status == http.StatusServiceUnavailable && strings.Contains(checks["jetstream"], "stream ERP") && strings.Contains(checks["jetstream"], "stream CARDS")
	}, 60*time.Second, 50*time.Millisecond, "both streams reported")
	t.Logf("then: %v", last)

	c.Restart("n2")
	require.Eventually(t, func() bool {
		status, checks := p.readyz(t)
		last = checks
		return status == http.StatusOK && checks["jetstream"] == "ok"
	}, 60*time.Second, 50*time.Millisecond, "ready again once a leader is elected")
}
