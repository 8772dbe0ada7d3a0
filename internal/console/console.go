// Package console is the operations console: a small web page, served by
// `cardbridge run` under /console/, showing recent requests and their
// outcomes, dead letters, the outbox backlog, the bindings, the
// self-service users and live throughput.
//
// It is plain server-rendered HTML (html/template), with its stylesheet and
// script embedded in the binary, so it works with no network and no build
// step, and a strict Content-Security-Policy can forbid everything else.
//
// Access: the console shows employee ids, sources and self-service user
// names, so it is private by default. Without a token it is read-only and
// answers only what arrives on a loopback connection, from this machine,
// and not through a proxy (no Forwarded or X-Forwarded-* header); anyone
// else gets a 403 that says to set CARDBRIDGE_CONSOLE_TOKEN. With a token
// every console request needs it, from anywhere, as HTTP basic auth (any
// user name, the token as password, so a browser can log in) or as a bearer
// token (for scripts), and the replay action is enabled. The token is
// compared in constant time. Browsers send basic credentials on their own,
// so the one action, a POST, is also refused unless it comes from the
// console's own origin (http.CrossOriginProtection): another site cannot
// make an operator's browser replay anything.
//
// Whatever the token, a request must name the console by a name it knows
// (the Host header): localhost, a loopback address, the address the
// connection reached, or one of Config.Hosts (CARDBRIDGE_CONSOLE_HOSTS).
// A page of another site whose name was rebound to this machine's address
// (DNS rebinding) names its own site, and is refused.
//
// Every answer, refusals included, carries the security headers: a strict
// Content-Security-Policy, no framing, no sniffing, no referrer, no caching.
package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/store"
)

// Prefix is where the console is mounted.
const Prefix = "/console/"

// Data is what the console reads; *store.Store implements it.
type Data interface {
	RecentRequests(ctx context.Context, limit int) ([]store.RequestSummary, error)
	RecentDeadLetters(ctx context.Context, limit int) ([]store.DeadLetterSummary, error)
	Bindings(ctx context.Context) ([]store.Binding, error)
	SelfServiceUserSummaries(ctx context.Context) ([]store.UserSummary, error)
	OutboxBacklog(ctx context.Context) (int64, time.Duration, error)
}

// Live is the state the page polls for its live numbers. Counters are
// cumulative; the page turns them into rates.
type Live struct {
	Time time.Time `json:"time"`
	// RequestsReceived and OutcomesPublished are the last sequence numbers
	// of the request and outcome streams: every process's work.
	RequestsReceived  uint64 `json:"requestsReceived"`
	OutcomesPublished uint64 `json:"outcomesPublished"`
	// Pending and AckPending are the durable consumer's messages not yet
	// delivered and delivered but not yet acknowledged.
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ackPending"`
	// OutboxBacklog and OutboxOldestSeconds describe the events committed
	// but not yet published.
	OutboxBacklog       int64   `json:"outboxBacklog"`
	OutboxOldestSeconds float64 `json:"outboxOldestSeconds"`
	// InFlight and Handled (by outcome) are this process's own.
	InFlight int64            `json:"inFlight"`
	Handled  map[string]int64 `json:"handled"`
	// Instance names the process that answered.
	Instance string `json:"instance"`
	// Errors names the parts that could not be read.
	Errors []string `json:"errors,omitempty"`
}

// ReplayFunc replays one dead letter (consumer.Replay) and returns it as
// released, ReplayCount counting this replay.
type ReplayFunc func(ctx context.Context, id int64) (store.DeadLetter, error)

// Config assembles a console.
type Config struct {
	Data Data
	// Live reads the live numbers.
	Live func(ctx context.Context) Live
	// Replay performs the replay action; it is offered only when Token is
	// set too.
	Replay ReplayFunc
	// Token guards the console; empty leaves it read-only and answering
	// only on loopback connections.
	Token secret.String
	// Hosts are the names the console may be asked for by (the Host
	// header), besides localhost, the loopback addresses and the address
	// the connection reached: a host name, or host:port to allow that port
	// only. Case does not matter.
	Hosts []string
	// Instance names this process on the page (e.g. its host name).
	Instance string
	Logger   *slog.Logger
}

// Console is the console's HTTP handler.
type Console struct {
	cfg     Config
	log     *slog.Logger
	handler http.Handler
	page    *template.Template
	// tokenSum is the token's SHA-256: comparing fixed-length digests keeps
	// the comparison constant-time whatever the guess's length.
	tokenSum [32]byte
}

//go:embed templates/*.html
var templates embed.FS

//go:embed static
var static embed.FS

// New returns the console.
func New(cfg Config) *Console {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Live == nil {
		cfg.Live = func(context.Context) Live { return Live{Time: time.Now()} }
	}
	c := &Console{
		cfg:  cfg,
		log:  cfg.Logger.With("component", "console"),
		page: template.Must(template.New("page.html").Funcs(funcs).ParseFS(templates, "templates/page.html")),
	}
	if !cfg.Token.IsZero() {
		c.tokenSum = sha256.Sum256([]byte(cfg.Token.Reveal()))
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"{$}", c.servePage)
	mux.HandleFunc("GET "+Prefix+"api/live", c.serveLive)
	staticFS, _ := fs.Sub(static, "static")
	mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(staticFS)))
	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.log.Warn("refused a cross-origin console action", "path", r.URL.Path, "origin", r.Header.Get("Origin"))
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
	}))
	mux.Handle("POST "+Prefix+"dead-letters/{id}/replay", csrf.Handler(http.HandlerFunc(c.serveReplay)))
	c.handler = secureHeaders(c.checkHost(redirectRoot(c.authorize(mux))))
	return c
}

// CanReplay reports whether the replay action is enabled.
func (c *Console) CanReplay() bool { return !c.cfg.Token.IsZero() && c.cfg.Replay != nil }

// ServeHTTP serves the console's paths under Prefix, and "/", which leads
// to the console: mount it on both.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.handler.ServeHTTP(w, r) }

// redirectRoot sends "/" to the console.
func redirectRoot(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			http.Redirect(w, r, Prefix, http.StatusFound)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkHost refuses a request that names the console by a name it does not
// know: what a page of another site gets when its name was rebound to this
// machine's address.
func (c *Console) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.knownHost(r) {
			c.log.Debug("console: refused a request for an unknown host", "host", r.Host, "remote", r.RemoteAddr)
			http.Error(w, fmt.Sprintf("the console is not served as %q: add that name to CARDBRIDGE_CONSOLE_HOSTS", r.Host), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// knownHost reports whether r's Host names this console: localhost, a
// loopback address, the address the connection reached, or one of
// Config.Hosts.
func (c *Console) knownHost(r *http.Request) bool {
	name, port := splitHost(r.Host)
	if name == "" {
		return false
	}
	if name == "localhost" {
		return true
	}
	if ip := net.ParseIP(name); ip != nil {
		if ip.IsLoopback() {
			return true
		}
		if local := localIP(r); local != nil && local.Equal(ip) {
			return true
		}
	}
	for _, h := range c.cfg.Hosts {
		if hn, hp := splitHost(h); hn == name && (hp == "" || hp == port) {
			return true
		}
	}
	return false
}

// splitHost splits a Host header, or a name of Config.Hosts, into its host
// name, lower-case, without brackets or a final dot, and its port, if any.
func splitHost(hostport string) (name, port string) {
	name = strings.ToLower(strings.TrimSpace(hostport))
	if h, p, err := net.SplitHostPort(name); err == nil {
		name, port = h, p
	}
	name = strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]"), ".")
	return name, port
}

// localIP is the address the request's connection reached, nil when the
// server did not say.
func localIP(r *http.Request) net.IP {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return nil
	}
	if tcp, ok := a.(*net.TCPAddr); ok {
		return tcp.IP
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return nil
	}
	return net.ParseIP(h)
}

// localURL is the console's address on this machine's loopback interface,
// at the port r reached.
func localURL(r *http.Request) string {
	port := "<HTTP_ADDR port>"
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, p, err := net.SplitHostPort(a.String()); err == nil {
			port = p
		}
	}
	return "http://127.0.0.1:" + port + Prefix
}

// fromThisMachine reports whether r came on a loopback connection, not
// through a proxy: both ends of the connection are loopback addresses, and
// no header says the request was forwarded (a proxy on this machine would
// otherwise make every visitor look local).
func fromThisMachine(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	remote, local := net.ParseIP(host), localIP(r)
	if remote == nil || !remote.IsLoopback() || local == nil || !local.IsLoopback() {
		return false
	}
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	return true
}

// authorize lets a request through when it carries the token, or, when no
// token is configured (then the console has no actions), when it comes
// from this machine.
func (c *Console) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.cfg.Token.IsZero() {
			if !fromThisMachine(r) {
				c.log.Debug("console: refused a request from another machine (no CARDBRIDGE_CONSOLE_TOKEN)", "remote", r.RemoteAddr)
				http.Error(w, "Without CARDBRIDGE_CONSOLE_TOKEN the console answers only on this machine, at "+localURL(r)+
					", not through a proxy. Set CARDBRIDGE_CONSOLE_TOKEN (at least 16 characters, e.g. openssl rand -base64 24) to reach it from elsewhere, with the token as the basic-auth password.", http.StatusForbidden)
				return
			}
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				http.Error(w, "the console is read-only: set CARDBRIDGE_CONSOLE_TOKEN to enable actions", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if !c.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="cardbridge console", charset="UTF-8"`)
			http.Error(w, "the console token is required (basic auth password or bearer token)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (c *Console) authorized(r *http.Request) bool {
	var presented string
	if _, pw, ok := r.BasicAuth(); ok {
		presented = pw
	} else if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		presented = strings.TrimSpace(h[7:])
	} else {
		return false
	}
	sum := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(sum[:], c.tokenSum[:]) == 1
}

// secureHeaders forbids everything the page does not need: other origins'
// scripts, styles and frames (no clickjacking of the replay button), and
// caching of pages that show personal data. Every answer carries them,
// refusals included.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// How many rows the page shows of each list.
const (
	requestRows    = 50
	deadLetterRows = 100
)

// pageData is what the template renders.
type pageData struct {
	Instance    string
	CanReplay   bool
	TokenSet    bool
	Flash       *flash
	Now         time.Time
	Requests    []store.RequestSummary
	DeadLetters []store.DeadLetterSummary
	Bindings    []store.Binding
	Users       []store.UserSummary
	Backlog     int64
	OldestAge   time.Duration
	// Errors names the sections that could not be read.
	Errors []string
}

type flash struct {
	OK   bool
	Text string
}

func (c *Console) servePage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	d := pageData{
		Instance:  c.cfg.Instance,
		CanReplay: c.CanReplay(),
		TokenSet:  !c.cfg.Token.IsZero(),
		Flash:     flashOf(r.URL.Query()),
		Now:       time.Now(),
	}
	// Each section is read on its own: one failing query leaves the rest
	// of the page useful, which is when an operator needs it most.
	note := func(section string, err error) {
		if err != nil {
			c.log.Warn("console: reading "+section, "err", err)
			d.Errors = append(d.Errors, section)
		}
	}
	var err error
	d.Requests, err = c.cfg.Data.RecentRequests(ctx, requestRows)
	note("recent requests", err)
	d.DeadLetters, err = c.cfg.Data.RecentDeadLetters(ctx, deadLetterRows)
	note("dead letters", err)
	d.Bindings, err = c.cfg.Data.Bindings(ctx)
	note("bindings", err)
	d.Users, err = c.cfg.Data.SelfServiceUserSummaries(ctx)
	note("self-service users", err)
	d.Backlog, d.OldestAge, err = c.cfg.Data.OutboxBacklog(ctx)
	note("outbox", err)

	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := c.page.Execute(w, d); err != nil {
		c.log.Warn("console: rendering the page", "err", err)
	}
}

func (c *Console) serveLive(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	l := c.cfg.Live(ctx)
	if l.Instance == "" {
		l.Instance = c.cfg.Instance
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(l)
}

// serveReplay replays one dead letter and sends the browser back to the
// page (POST-redirect-GET, so a reload does not replay again), with the
// result in the query. The result is codes and numbers only, so a crafted
// link cannot make the page say anything else.
func (c *Console) serveReplay(w http.ResponseWriter, r *http.Request) {
	if !c.CanReplay() {
		http.Error(w, "replay is disabled", http.StatusForbidden)
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "not a dead letter id", http.StatusBadRequest)
		return
	}
	// The replay must not be cut short by a browser that stops waiting.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 15*time.Second)
	defer cancel()
	q := url.Values{}
	d, err := c.cfg.Replay(ctx, id)
	switch {
	case err == nil:
		c.log.Info("dead letter replayed from the console", "dead_letter", id,
			"request_source", d.Source, "request_id", d.RequestID, "generation", d.ReplayCount)
		q.Set("replayed", strconv.FormatInt(id, 10))
		q.Set("generation", strconv.Itoa(d.ReplayCount))
	default:
		why := "failed"
		switch {
		case errors.Is(err, store.ErrAlreadyIssued):
			why = "issued"
		case errors.Is(err, store.ErrNotFound):
			why = "not_found"
		case errors.Is(err, store.ErrNotReplayable):
			why = "conflict"
		case errors.Is(err, store.ErrNoRequest):
			why = "no_request"
		}
		c.log.Warn("console: replaying a dead letter", "dead_letter", id, "err", err)
		q.Set("replay_failed", strconv.FormatInt(id, 10))
		q.Set("why", why)
	}
	http.Redirect(w, r, Prefix+"?"+q.Encode()+"#dead-letters", http.StatusSeeOther)
}

func flashOf(q url.Values) *flash {
	if id, err := strconv.ParseInt(q.Get("replayed"), 10, 64); err == nil {
		gen, _ := strconv.Atoi(q.Get("generation"))
		return &flash{OK: true, Text: fmt.Sprintf("Dead letter %d replayed (replay %d): its request is being handled again.", id, gen)}
	}
	if id, err := strconv.ParseInt(q.Get("replay_failed"), 10, 64); err == nil {
		text := fmt.Sprintf("Replaying dead letter %d failed; the log says why. Replaying it again is safe.", id)
		switch q.Get("why") {
		case "issued":
			text = fmt.Sprintf("Dead letter %d was not replayed: its request already has a card.", id)
		case "not_found":
			text = fmt.Sprintf("Dead letter %d does not exist.", id)
		case "no_request":
			text = fmt.Sprintf("Dead letter %d was not replayed: it names no request it may speak for, and would be refused again; the ERP must send a valid request.", id)
		case "conflict":
			text = fmt.Sprintf("Dead letter %d was not replayed: it is a duplicate_conflict; the first request with its id stands, and the new one must be sent under a new id.", id)
		}
		return &flash{Text: text}
	}
	return nil
}

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(now, t time.Time) string { return roundAge(now.Sub(t)) + " ago" },
	"age": roundAge,
}

// roundAge prints a duration as a person reads an age: 3s, 4m10s, 2h5m.
func roundAge(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
}
