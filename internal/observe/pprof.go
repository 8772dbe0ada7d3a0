package observe

import (
	"net/http"
	"net/http/pprof"
)

// MountProfiles serves Go's profiles under /debug/pprof/ on mux. They are
// for whoever can reach the address, so callers mount them only when asked
// to (CARDBRIDGE_PPROF=true).
func MountProfiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
