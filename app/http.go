package app

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/cardbridge/cardbridge/observe"
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

// ready reports whether this process can do its job: Postgres answers and
// is migrated, and NATS is connected.
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
	if err := s.store.Ping(ctx); err != nil {
		checks["postgres"], ok = "unreachable", false
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
	// A process paused by a fault of the deployment handles nothing until
	// the fault clears; the check names it.
	if p := s.consumer.Paused(); p.Paused {
		checks["consumer"], ok = "paused: "+p.Code+": "+p.Message, false
	} else {
		checks["consumer"] = "ok"
	}
	return checks, ok
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
