package app

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/internal/observe"
)

func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.ready)
	if s.cfg.Pprof {
		observe.MountProfiles(mux)
	}
	s.mountOperations(mux) // /metrics and /console/ (operations.go)
	return mux
}

// ready reports whether this process can do its job: Postgres accepts
// the pipeline's writes now and is migrated, and NATS is connected.
func (s *Service) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks, ok := s.readiness(ctx)
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]any{"ready": ok, "checks": checks})
}

// readiness runs the checks of /readyz (and of the cardbridge_ready
// metric): check name -> "ok" or what is wrong.
func (s *Service) readiness(ctx context.Context) (map[string]string, bool) {
	checks := map[string]string{}
	ok := true
	// Not a ping: a stalled database (a table locked, a server that
	// accepts connections but not writes, a read-only standby) answers a
	// ping and still holds every request. CheckWritable has its own bound.
	if err := s.store.CheckWritable(ctx); err != nil {
		checks["postgres"], ok = postgresState(err), false
	} else if err := s.store.CheckMigrations(ctx); err != nil {
		checks["postgres"], ok = "migrations pending", false
	} else {
		checks["postgres"] = "ok"
	}
	if s.nc.IsConnected() {
		checks["nats"] = "ok"
	} else {
		checks["nats"], ok = s.nc.Status().String(), false
	}
	if state := s.streams.check(ctx, s.js, s.cfg.NATS.RequestStream, s.cfg.NATS.OutcomeStream); state != "ok" {
		checks["jetstream"], ok = state, false
	} else {
		checks["jetstream"] = "ok"
	}
	// A process paused by a fault of the deployment handles nothing until
	// the fault clears; the check names it.
	if p := s.consumer.Paused(); p.Paused {
		checks["consumer"], ok = "paused: "+p.Code+": "+p.Message, false
	} else {
		checks["consumer"] = "ok"
	}
	return checks, ok
}

// postgresState names what is wrong with Postgres for /readyz, without
// the error's text (which names hosts and users).
func postgresState(err error) string {
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && (pe.Code == "55P03" || pe.Code == "57014"):
		return "stalled: the pipeline's tables are locked or statements time out"
	case errors.As(err, &pe) && pe.Code == "25006":
		return "read-only: connected to a server that does not accept writes"
	case errors.As(err, &pe):
		return "error " + pe.Code
	}
	return "unreachable"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// streamCheck is the "jetstream" check of /readyz: the streams cardbridge
// reads and writes answer, each with a leader. A stream without one (a
// cluster that lost its quorum) takes no request and no outcome, though
// the connection to NATS is up. The answer is kept for streamCheckTTL, so
// that frequent probes and scrapes cost two requests a second at most.
type streamCheck struct {
	mu    sync.Mutex
	at    time.Time
	state string
}

const (
	streamCheckTTL     = time.Second
	streamCheckTimeout = time.Second
)

func (c *streamCheck) check(ctx context.Context, js jetstream.JetStream, streams ...string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < streamCheckTTL {
		return c.state
	}
	ctx, cancel := context.WithTimeout(ctx, streamCheckTimeout)
	defer cancel()
	states := make([]string, len(streams))
	var wg sync.WaitGroup
	for i, name := range streams {
		wg.Go(func() { states[i] = streamState(ctx, js, name) })
	}
	wg.Wait()
	var bad []string
	for _, st := range states {
		if st != "" {
			bad = append(bad, st)
		}
	}
	c.state = "ok"
	if len(bad) > 0 {
		c.state = strings.Join(bad, "; ")
	}
	c.at = time.Now()
	return c.state
}

// streamState is "" when stream answers with a leader, else what is wrong.
func streamState(ctx context.Context, js jetstream.JetStream, name string) string {
	st, err := js.Stream(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return "stream " + name + " missing"
	case err != nil:
		return "stream " + name + " unavailable"
	}
	if cl := st.CachedInfo().Cluster; cl != nil && cl.Name != "" && cl.Leader == "" {
		return "stream " + name + " has no leader"
	}
	return ""
}
