// Package config reads cardbridge's settings from the environment and checks
// them all at once, so an operator sees every problem in one go rather than
// one per restart.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
)

// Config is the whole configuration of a cardbridge process.
type Config struct {
	DatabaseURL secret.String // may carry a password
	NATSURL     string

	MBanq MBanq

	SecretKey []byte // CARDBRIDGE_SECRET_KEY, decoded
	// PreviousSecretKeys are older keys still accepted for decryption while
	// a rotation is under way (CARDBRIDGE_SECRET_KEY_PREVIOUS, comma separated).
	PreviousSecretKeys [][]byte
	Source             string // CARDBRIDGE_SOURCE

	HTTPAddr string
	Logging  Logging

	NATS NATS

	// MaxInFlight bounds the requests at the bank at once, per process
	// (CARDBRIDGE_MAX_IN_FLIGHT).
	MaxInFlight int
	// RetryFor is the retry budget: how long a request may spend trying
	// the bank before it is given up (CARDBRIDGE_RETRY_FOR, default 24h).
	RetryFor time.Duration
	// RetryDelayMax caps the delay between deliveries of a request that
	// failed at the bank or in our database (CARDBRIDGE_RETRY_DELAY_MAX,
	// default 5m).
	RetryDelayMax time.Duration
	// BankKeyRetention is how long the bank is trusted to remember an
	// Idempotency-Key (CARDBRIDGE_BANK_KEY_RETENTION, default 24h): a
	// request whose order's answer is unknown is asked again under its key
	// only for that long.
	BankKeyRetention time.Duration
	// Retention is how long Postgres keeps a request's records: inbox,
	// card order, dead letter (CARDBRIDGE_RETENTION, default 90 days, at
	// least 2 days).
	Retention time.Duration
	// DeadLetterBodyRetention is how long a dead letter keeps the original
	// message, with its personal data (CARDBRIDGE_DEAD_LETTER_BODY_RETENTION,
	// default 30 days, at most Retention).
	DeadLetterBodyRetention time.Duration
	// Warnings are settings that were read but are no longer used; the
	// process logs them at start rather than refusing to start.
	Warnings []string
	// AutoMigrate applies pending migrations at start instead of refusing to
	// start (CARDBRIDGE_AUTO_MIGRATE=true, or `run --migrate`).
	AutoMigrate bool
	// Operations: the console's credential and tracing (operations.go).
	Operations Operations
	// Pprof serves /debug/pprof on HTTP_ADDR (CARDBRIDGE_PPROF=true).
	Pprof bool
}

// MBanq is how cardbridge reaches the bank.
type MBanq struct {
	BaseURL           string
	TenantID          string
	ClientID          string
	ClientSecret      secret.String
	AdminUsername     string
	AdminPassword     secret.String
	OfficeID          int64
	SelfServiceRoleID int64 // 0: discover from the roles list
	// AllowPlainHTTP accepts an http:// BaseURL to a host other than the
	// loopback (MBANQ_ALLOW_PLAIN_HTTP=true), for a sandbox.
	AllowPlainHTTP bool
	// MaxAttempts is the number of tries of one MBanq call within a
	// delivery (default 4). Not read from the environment; tests set 1 to
	// see each failure as a delivery.
	MaxAttempts int
	// RequestTimeout bounds one attempt of a call, the answer included
	// (MBANQ_REQUEST_TIMEOUT); ConnectTimeout and TLSHandshakeTimeout bound
	// dialling the bank and the TLS handshake (MBANQ_CONNECT_TIMEOUT,
	// MBANQ_TLS_HANDSHAKE_TIMEOUT). Zero takes mbanq's defaults (15s, 5s,
	// 10s), the one place they are set.
	RequestTimeout      time.Duration
	ConnectTimeout      time.Duration
	TLSHandshakeTimeout time.Duration
	// AdaptiveLimit paces the calls to the bank by what it answers
	// (MBANQ_ADAPTIVE_LIMIT, default true); false lets every call start at
	// once, as each retries on its own.
	AdaptiveLimit bool
}

// NATS names the streams, subjects and consumer cardbridge uses.
type NATS struct {
	RequestStream  string        // CARDBRIDGE_REQUEST_STREAM, default ERP
	RequestSubject string        // CARDBRIDGE_REQUEST_SUBJECT, default employee.card.requested
	OutcomeStream  string        // CARDBRIDGE_OUTCOME_STREAM, default CARDS
	Consumer       string        // CARDBRIDGE_CONSUMER, default cardbridge
	AckWait        time.Duration // CARDBRIDGE_ACK_WAIT, default DefaultAckWait (6s)
	// AckWaitSet says CARDBRIDGE_ACK_WAIT was set: an existing consumer is
	// brought to it (broker.AlignAckWait).
	AckWaitSet bool
	// RequestMaxBytes bounds the request stream cardbridge creates
	// (CARDBRIDGE_REQUEST_STREAM_MAX_BYTES, default 1 GiB).
	RequestMaxBytes int64
	// OutcomeRetention is how long the outcome stream cardbridge creates
	// keeps events (CARDBRIDGE_OUTCOME_RETENTION, default 30 days).
	OutcomeRetention time.Duration
	// StreamReplicas is how many copies of each stream cardbridge creates
	// keep (CARDBRIDGE_STREAM_REPLICAS, 1 to 5); 0, the default, gives 3
	// on a NATS cluster that can keep them and 1 on a single server.
	StreamReplicas int
}

// Defaults for the optional settings. A setting that tunes one part of
// cardbridge takes that part's default, named here so the README's table
// and the environment agree with it; only the settings of the process as a
// whole are decided here.
const (
	DefaultSource                  = "urn:cardbridge"
	DefaultHTTPAddr                = ":8080"
	DefaultRetention               = 90 * 24 * time.Hour
	DefaultDeadLetterBodyRetention = 30 * 24 * time.Hour
	DefaultDatabaseURL             = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	DefaultNATSURL                 = "nats://127.0.0.1:4222"

	// The broker's.
	DefaultRequestStream    = broker.DefaultRequestStream
	DefaultRequestSubject   = broker.DefaultRequestSubject
	DefaultOutcomeStream    = broker.DefaultOutcomeStream
	DefaultConsumer         = broker.DefaultConsumer
	DefaultAckWait          = broker.DefaultAckWait
	DefaultRequestMaxBytes  = broker.DefaultRequestMaxBytes
	DefaultOutcomeRetention = broker.DefaultOutcomeMaxAge

	// The bank's.
	DefaultBankKeyRetention = mbanq.DefaultKeyRetention

	// The retry budget's, which the decision owns.
	DefaultRetryFor      = decision.DefaultRetryFor
	DefaultRetryDelayMax = decision.DefaultMaxRetryDelay

	// The consumer's: consumer.DefaultMaxInFlight and DefaultOfficeID own
	// these values. This package cannot refer to them: the consumer's own
	// tests reach it through internal/testenv, and the import would close
	// a cycle. A test holds them equal instead.
	DefaultMaxInFlight = 256
	DefaultOfficeID    = 1
)

// MinAckWait is the shortest CARDBRIDGE_ACK_WAIT accepted.
const MinAckWait = time.Second

// Error lists every problem found in the environment.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid configuration: " + strings.Join(e.Problems, "; ")
}

// Defaults returns a Config with every optional setting at its default and
// the required ones empty.
func Defaults() Config {
	return Config{
		Source:                  DefaultSource,
		HTTPAddr:                DefaultHTTPAddr,
		Logging:                 Logging{Level: slog.LevelInfo, Format: LogFormatAuto},
		MaxInFlight:             DefaultMaxInFlight,
		RetryFor:                DefaultRetryFor,
		RetryDelayMax:           DefaultRetryDelayMax,
		Retention:               DefaultRetention,
		DeadLetterBodyRetention: DefaultDeadLetterBodyRetention,
		MBanq:                   MBanq{OfficeID: DefaultOfficeID, AdaptiveLimit: true},
		NATS: NATS{
			RequestStream:    DefaultRequestStream,
			RequestSubject:   DefaultRequestSubject,
			OutcomeStream:    DefaultOutcomeStream,
			Consumer:         DefaultConsumer,
			AckWait:          DefaultAckWait,
			RequestMaxBytes:  DefaultRequestMaxBytes,
			OutcomeRetention: DefaultOutcomeRetention,
		},
	}
}

// FromEnv reads the configuration of `cardbridge run` through getenv (os.Getenv
// in production, a map in tests). Every required setting must be present; the
// returned *Error names all that are missing or malformed.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Defaults()
	p := &parser{getenv: getenv}

	c.DatabaseURL = secret.New(p.required("DATABASE_URL"))
	c.NATSURL = p.required("NATS_URL")
	c.MBanq.BaseURL = p.url("MBANQ_BASE_URL")
	c.MBanq.TenantID = p.required("MBANQ_TENANT_ID")
	c.MBanq.ClientID = p.required("MBANQ_CLIENT_ID")
	c.MBanq.ClientSecret = secret.New(p.required("MBANQ_CLIENT_SECRET"))
	c.MBanq.AdminUsername = p.required("MBANQ_ADMIN_USERNAME")
	c.MBanq.AdminPassword = secret.New(p.required("MBANQ_ADMIN_PASSWORD"))
	p.positiveInt64("MBANQ_OFFICE_ID", &c.MBanq.OfficeID)
	p.positiveInt64("MBANQ_SELF_SERVICE_ROLE_ID", &c.MBanq.SelfServiceRoleID)
	p.boolean("MBANQ_ALLOW_PLAIN_HTTP", &c.MBanq.AllowPlainHTTP)
	p.duration("MBANQ_REQUEST_TIMEOUT", &c.MBanq.RequestTimeout)
	p.duration("MBANQ_CONNECT_TIMEOUT", &c.MBanq.ConnectTimeout)
	p.duration("MBANQ_TLS_HANDSHAKE_TIMEOUT", &c.MBanq.TLSHandshakeTimeout)
	{
		rt, rtName := c.MBanq.RequestTimeout, "MBANQ_REQUEST_TIMEOUT"
		if rt == 0 {
			rt, rtName = mbanq.DefaultRequestTimeout, "MBANQ_REQUEST_TIMEOUT's default"
		}
		for _, s := range []struct {
			name string
			d    time.Duration
		}{{"MBANQ_CONNECT_TIMEOUT", c.MBanq.ConnectTimeout}, {"MBANQ_TLS_HANDSHAKE_TIMEOUT", c.MBanq.TLSHandshakeTimeout}} {
			if s.d > rt {
				p.problem("%s: %s is longer than %s (%s), which bounds the whole attempt, dialling included; shorten it or raise MBANQ_REQUEST_TIMEOUT", s.name, s.d, rtName, rt)
			}
		}
	}
	p.boolean("MBANQ_ADAPTIVE_LIMIT", &c.MBanq.AdaptiveLimit)

	c.SecretKey, c.PreviousSecretKeys = p.secretKeys()
	p.optional("CARDBRIDGE_SOURCE", &c.Source)
	p.optional("HTTP_ADDR", &c.HTTPAddr)
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		p.problem("HTTP_ADDR: %q is not host:port", c.HTTPAddr)
	}
	c.Logging = p.logging()

	p.optional("CARDBRIDGE_REQUEST_STREAM", &c.NATS.RequestStream)
	p.optional("CARDBRIDGE_REQUEST_SUBJECT", &c.NATS.RequestSubject)
	p.optional("CARDBRIDGE_OUTCOME_STREAM", &c.NATS.OutcomeStream)
	p.optional("CARDBRIDGE_CONSUMER", &c.NATS.Consumer)
	p.duration("CARDBRIDGE_ACK_WAIT", &c.NATS.AckWait)
	c.NATS.AckWaitSet = strings.TrimSpace(getenv("CARDBRIDGE_ACK_WAIT")) != ""
	if c.NATS.AckWait < MinAckWait {
		p.problem("CARDBRIDGE_ACK_WAIT: %s is shorter than %s; a process says it is still working on a message every third of it, and a moment's stall would hand slow work to another process", c.NATS.AckWait, MinAckWait)
	}
	p.positiveInt64("CARDBRIDGE_REQUEST_STREAM_MAX_BYTES", &c.NATS.RequestMaxBytes)
	p.duration("CARDBRIDGE_OUTCOME_RETENTION", &c.NATS.OutcomeRetention)
	p.streamReplicas("CARDBRIDGE_STREAM_REPLICAS", &c.NATS.StreamReplicas)
	p.duration("CARDBRIDGE_RETRY_FOR", &c.RetryFor)
	p.duration("CARDBRIDGE_RETRY_DELAY_MAX", &c.RetryDelayMax)
	p.duration("CARDBRIDGE_BANK_KEY_RETENTION", &c.BankKeyRetention)
	p.duration("CARDBRIDGE_RETENTION", &c.Retention)
	p.duration("CARDBRIDGE_DEAD_LETTER_BODY_RETENTION", &c.DeadLetterBodyRetention)
	if c.Retention < 48*time.Hour {
		p.problem("CARDBRIDGE_RETENTION: %s is less than 48h; records must outlive every redelivery, and requests older than it less a day are refused", c.Retention)
	}
	keyRetention := c.BankKeyRetention
	if keyRetention == 0 {
		keyRetention = DefaultBankKeyRetention
	}
	if margin := 2 * (c.RetryDelayMax + c.NATS.AckWait); keyRetention <= margin {
		p.problem("CARDBRIDGE_BANK_KEY_RETENTION: %s is not longer than %s (twice CARDBRIDGE_RETRY_DELAY_MAX and CARDBRIDGE_ACK_WAIT): an unknown answer could never be asked about", keyRetention, margin)
	}
	if c.DeadLetterBodyRetention > c.Retention {
		p.problem("CARDBRIDGE_DEAD_LETTER_BODY_RETENTION: %s is longer than CARDBRIDGE_RETENTION (%s), which deletes the dead letters", c.DeadLetterBodyRetention, c.Retention)
	}
	if strings.TrimSpace(getenv("CARDBRIDGE_MAX_DELIVER")) != "" {
		c.Warnings = append(c.Warnings, "CARDBRIDGE_MAX_DELIVER is no longer used: the retry budget is the time spent trying the bank, CARDBRIDGE_RETRY_FOR (default 24h)")
	}
	p.positiveInt("CARDBRIDGE_MAX_IN_FLIGHT", &c.MaxInFlight)
	p.boolean("CARDBRIDGE_AUTO_MIGRATE", &c.AutoMigrate)
	p.boolean("CARDBRIDGE_PPROF", &c.Pprof)
	c.Operations = p.operations()

	if len(p.problems) > 0 {
		return c, &Error{Problems: p.problems}
	}
	return c, nil
}

// Logging is how the process logs, read once from LOG_LEVEL and
// LOG_FORMAT: FromEnv reads it with the rest, LoggingFromEnv alone.
type Logging struct {
	Level  slog.Level
	Format LogFormat
}

// LogFormat is how log lines are written (LOG_FORMAT).
type LogFormat string

// The log formats.
const (
	LogFormatAuto LogFormat = ""     // text on a terminal, JSON otherwise
	LogFormatText LogFormat = "text" // tint's coloured text
	LogFormatJSON LogFormat = "json"
)

// LoggingFromEnv reads only LOG_LEVEL and LOG_FORMAT, for commands that
// need nothing else.
func LoggingFromEnv(getenv func(string) string) (Logging, error) {
	p := &parser{getenv: getenv}
	l := p.logging()
	if len(p.problems) > 0 {
		return l, &Error{Problems: p.problems}
	}
	return l, nil
}

// SecretKeys reads only CARDBRIDGE_SECRET_KEY and
// CARDBRIDGE_SECRET_KEY_PREVIOUS, for commands that open sealed passwords
// without running the service. Its errors never contain a key.
func SecretKeys(getenv func(string) string) (key []byte, previous [][]byte, err error) {
	p := &parser{getenv: getenv}
	key, previous = p.secretKeys()
	if len(p.problems) > 0 {
		return nil, nil, &Error{Problems: p.problems}
	}
	return key, previous, nil
}

type parser struct {
	getenv   func(string) string
	problems []string
}

func (p *parser) problem(format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

func (p *parser) required(name string) string {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		p.problem("%s is required", name)
	}
	return v
}

func (p *parser) optional(name string, dst *string) {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		*dst = v
	}
}

func (p *parser) url(name string) string {
	v := p.required(name)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.problem("%s: %q is not an http(s) URL", name, secret.RedactURL(v))
	}
	return strings.TrimRight(v, "/")
}

func (p *parser) positiveInt64(name string, dst *int64) {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		p.problem("%s: %q is not a positive integer", name, v)
		return
	}
	*dst = n
}

// streamReplicas reads a stream's number of replicas: 1 to
// broker.MaxReplicas, or "auto" (0) for what the deployment can give
// (broker.DefaultReplicas on a cluster).
func (p *parser) streamReplicas(name string, dst *int) {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" || strings.EqualFold(v, "auto") {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > broker.MaxReplicas {
		p.problem("%s: %q is not a number of replicas from 1 to %d, or auto (3 on a NATS cluster that can keep them, 1 on a single server)", name, v, broker.MaxReplicas)
		return
	}
	*dst = n
}

func (p *parser) positiveInt(name string, dst *int) {
	var n int64 = int64(*dst)
	p.positiveInt64(name, &n)
	*dst = int(n)
}

func (p *parser) duration(name string, dst *time.Duration) {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		p.problem("%s: %q is not a positive duration such as 30s", name, v)
		return
	}
	*dst = d
}

func (p *parser) boolean(name string, dst *bool) {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.problem("%s: %q is not true or false", name, v)
		return
	}
	*dst = b
}

func (p *parser) secretKeys() (key []byte, previous [][]byte) {
	if raw := p.required("CARDBRIDGE_SECRET_KEY"); raw != "" {
		k, err := secret.ParseKey(secret.New(raw))
		if err != nil {
			p.problem("CARDBRIDGE_SECRET_KEY: %v (generate one with: openssl rand -base64 32)", err)
		}
		key = k
	}
	if raw := strings.TrimSpace(p.getenv("CARDBRIDGE_SECRET_KEY_PREVIOUS")); raw != "" {
		for i, part := range strings.Split(raw, ",") {
			k, err := secret.ParseKey(secret.New(strings.TrimSpace(part)))
			if err != nil {
				p.problem("CARDBRIDGE_SECRET_KEY_PREVIOUS[%d]: %v", i, err)
				continue
			}
			previous = append(previous, k)
		}
	}
	return key, previous
}

func (p *parser) logging() Logging {
	l := Logging{Level: slog.LevelInfo}
	if v := strings.TrimSpace(p.getenv("LOG_LEVEL")); v != "" {
		if err := l.Level.UnmarshalText([]byte(v)); err != nil {
			p.problem("LOG_LEVEL: %q is not one of debug, info, warn, error", v)
		}
	}
	format := LogFormat(strings.ToLower(strings.TrimSpace(p.getenv("LOG_FORMAT"))))
	switch format {
	case LogFormatAuto, LogFormatText, LogFormatJSON:
		l.Format = format
	default:
		p.problem("LOG_FORMAT: %q is not text or json", format)
	}
	return l
}

// ErrIs reports whether err is a configuration error.
func ErrIs(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
