package bench

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// Config is one benchmark run. Defaults returns the values of the
// command's flags; the zero value is not meant to be used.
type Config struct {
	// Requests is how many requests to publish as fast as the publish
	// window allows. Ignored when Rate is set.
	Requests int
	// Rate, when positive, publishes this many requests per second for
	// Duration instead (an open-loop load: publishing does not wait for
	// outcomes, so a slow service shows as growing latency, not as a
	// slower publisher).
	Rate     float64
	Duration time.Duration
	// Preload publishes every request before cardbridge starts, so that
	// they all wait in the stream; only with a stack of the bench's own.
	Preload bool

	// NATSURL names an existing deployment to drive; empty starts a stack
	// of the bench's own (self-contained).
	NATSURL string
	// Source and ClientID are what every request carries. The source must
	// be bound to the client; a self-contained run binds it itself, to
	// SavingsAccountID and CardProductID.
	Source           string
	ClientID         int64
	SavingsAccountID int64
	CardProductID    int64

	// InFlight is CARDBRIDGE_MAX_IN_FLIGHT of each instance and the
	// concurrency of the baseline.
	InFlight int
	// Instances is how many cardbridge processes share the consumer.
	Instances int
	// BankLatency and BankLatencyJitter are the sandbox's added delay.
	BankLatency       time.Duration
	BankLatencyJitter time.Duration
	// BankRateLimit, when positive, is the sandbox tenant's limit in calls
	// per second (`cardbridge sandbox --rate-limit`): calls over it are
	// answered 429 with Retry-After.
	BankRateLimit float64
	// DatabaseURL is the Postgres server of the stack and the baseline;
	// Schema is created (dropped first if present) and, unless KeepSchema,
	// dropped at the end.
	DatabaseURL string
	Schema      string
	KeepSchema  bool
	// CardbridgeBin is the executable started as sandbox and as cardbridge
	// (default: the running executable, which is cardbridge itself).
	CardbridgeBin string
	// LogLevel is LOG_LEVEL of the children; LogDir, when set, keeps their
	// logs there (otherwise they live in a temporary directory).
	LogLevel string
	LogDir   string

	// Publishers is how many goroutines publish; PublishWindow bounds the
	// publishes awaiting JetStream's acknowledgement.
	Publishers    int
	PublishWindow int

	// Settle is how long to keep listening after the last expected outcome,
	// to catch late duplicates. IdleTimeout gives up when no outcome came
	// for that long while some are missing; Timeout bounds the whole wait
	// (0: no bound besides IdleTimeout).
	Settle      time.Duration
	IdleTimeout time.Duration
	Timeout     time.Duration

	// Warmup leaves the requests published in the first Warmup of the run
	// out of the latency figures (not out of the outcome checks): new
	// connections, first token grants and a small heap make the first
	// second unlike the rest.
	Warmup time.Duration

	// Baseline measures one bare commit per request on the same Postgres
	// after the run, for BaselineRequests requests (0: as many as the run,
	// capped at DefaultBaselineCap) over BaselineConns connections (0:
	// InFlight, capped at DefaultBaselineConnsCap: Postgres allows 100
	// connections by default, and on two cores more than about 32
	// concurrent commits only lower the rate, which would flatter the ratio).
	Baseline         bool
	BaselineRequests int
	BaselineConns    int

	// AllowFailed accepts card.failed outcomes as a success of the run
	// (for runs with bank faults); by default any is a failure.
	AllowFailed bool
	// Progress prints a line a second on the progress writer.
	Progress bool
	// HTMLPath, when set, receives the latency histogram page.
	HTMLPath string
}

// Defaults used by Defaults and for zero values where noted.
const (
	DefaultSource           = "urn:erp:bench"
	DefaultSchema           = "cardbridge_bench"
	DefaultBaselineCap      = 20000
	DefaultBaselineConnsCap = 32
)

// Defaults returns the configuration of `cardbridge bench` with no flags.
func Defaults() Config {
	return Config{
		Requests:         10000,
		Source:           DefaultSource,
		ClientID:         1,
		SavingsAccountID: 1,
		CardProductID:    1,
		InFlight:         config.DefaultMaxInFlight,
		Instances:        1,
		DatabaseURL:      config.DefaultDatabaseURL,
		Schema:           DefaultSchema,
		LogLevel:         "info",
		Publishers:       2,
		PublishWindow:    4096,
		Settle:           time.Second,
		IdleTimeout:      60 * time.Second,
	}
}

// SelfContained reports whether the run starts its own stack.
func (c Config) SelfContained() bool { return c.NATSURL == "" }

// total is the number of requests the run publishes.
func (c Config) total() int {
	if c.Rate > 0 {
		return int(c.Rate * c.Duration.Seconds())
	}
	return c.Requests
}

// Validate names every problem at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.Rate < 0:
		add("--rate must not be negative")
	case c.Rate > 0 && c.Duration <= 0:
		add("--rate needs a positive --duration")
	case c.Rate == 0 && c.Duration > 0:
		add("--duration needs --rate")
	case c.Rate == 0 && c.Requests <= 0:
		add("--requests must be positive")
	}
	if c.Rate > 0 && c.total() < 1 {
		add("--rate × --duration is less than one request")
	}
	if c.Preload && c.Rate > 0 {
		add("--preload publishes everything at once; it does not go with --rate")
	}
	if c.Preload && !c.SelfContained() {
		add("--preload needs a stack of the bench's own (no --nats-url): it starts cardbridge after publishing")
	}
	if c.Source == "" {
		add("--source must not be empty")
	}
	if c.ClientID <= 0 || c.SavingsAccountID <= 0 || c.CardProductID <= 0 {
		add("--client-id, --savings-account-id and --card-product-id must be positive")
	}
	if c.InFlight <= 0 {
		add("--in-flight must be positive")
	}
	if c.Instances <= 0 {
		add("--instances must be positive")
	}
	if c.BankLatency < 0 || c.BankLatencyJitter < 0 {
		add("--bank-latency and --bank-latency-jitter must not be negative")
	}
	if c.BankRateLimit < 0 {
		add("--bank-rate-limit must not be negative")
	}
	if c.Publishers <= 0 || c.PublishWindow <= 0 {
		add("--publishers and --publish-window must be positive")
	}
	if c.Settle < 0 || c.IdleTimeout <= 0 || c.Timeout < 0 {
		add("--settle and --timeout must not be negative, --idle-timeout must be positive")
	}
	if c.Warmup < 0 {
		add("--warmup must not be negative")
	}
	if c.BaselineRequests < 0 || c.BaselineConns < 0 {
		add("--baseline-requests and --baseline-conns must not be negative")
	}
	if (c.SelfContained() || c.Baseline) && c.DatabaseURL == "" {
		add("--database-url is required")
	}
	if (c.SelfContained() || c.Baseline) && !validSchemaName(c.Schema) {
		add("--schema %q: want a lower-case SQL identifier (letters, digits, _), not public, information_schema or pg_*", c.Schema)
	}
	if !c.SelfContained() && (c.Instances != 1 || c.BankLatency != 0 || c.BankLatencyJitter != 0 || c.BankRateLimit != 0) {
		add("--instances, --bank-latency and --bank-rate-limit apply only to a stack of the bench's own (no --nats-url)")
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// validSchemaName accepts what can be spliced into DDL without quoting:
// the schema name comes from a flag and ends up in DROP SCHEMA ... CASCADE,
// which is also why the schemas every database has are refused.
func validSchemaName(s string) bool {
	if s == "" || len(s) > 63 || (s[0] >= '0' && s[0] <= '9') ||
		s == "public" || s == "information_schema" || strings.HasPrefix(s, "pg_") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// sandboxSeedValues are what the children are configured with: the
// sandbox is started with its default seed.
var sandboxSeedValues = map[string]string{
	"MBANQ_TENANT_ID":      sandbox.DefaultTenantID,
	"MBANQ_CLIENT_ID":      sandbox.DefaultOAuthClientID,
	"MBANQ_CLIENT_SECRET":  sandbox.DefaultOAuthClientSecret,
	"MBANQ_ADMIN_USERNAME": sandbox.DefaultAdminUsername,
	"MBANQ_ADMIN_PASSWORD": sandbox.DefaultAdminPassword,
}
