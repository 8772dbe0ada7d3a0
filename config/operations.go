package config

import (
	"net/url"
	"strings"

	"github.com/cardbridge/cardbridge/secret"
)

// Operations configures what the people running cardbridge use: the
// console's credential and where traces go.
type Operations struct {
	// ConsoleToken guards the web console and enables its actions
	// (CARDBRIDGE_CONSOLE_TOKEN). Empty: the console is read-only.
	ConsoleToken secret.String
	// TracesURL is the OTLP/HTTP endpoint of traces, from the standard
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or OTEL_EXPORTER_OTLP_ENDPOINT
	// plus /v1/traces. Empty: tracing is off and costs nothing.
	TracesURL string
}

// minConsoleToken is the shortest console token accepted: it is the only
// thing between the network and the replay button.
const minConsoleToken = 16

// operations reads the Operations settings, following the OpenTelemetry
// conventions for the exporter's variables so that a collector configured
// for other services works for this one too.
func (p *parser) operations() Operations {
	var o Operations
	if tok := strings.TrimSpace(p.getenv("CARDBRIDGE_CONSOLE_TOKEN")); tok != "" {
		if len(tok) < minConsoleToken {
			p.problem("CARDBRIDGE_CONSOLE_TOKEN: at least %d characters, please (e.g. openssl rand -base64 24)", minConsoleToken)
		}
		o.ConsoleToken = secret.New(tok)
	}

	if disabled := strings.TrimSpace(p.getenv("OTEL_SDK_DISABLED")); strings.EqualFold(disabled, "true") {
		return o
	}
	if exp := strings.TrimSpace(p.getenv("OTEL_TRACES_EXPORTER")); exp != "" && exp != "otlp" {
		if exp != "none" {
			p.problem("OTEL_TRACES_EXPORTER: %q is not supported (otlp or none)", exp)
		}
		return o
	}
	name := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	endpoint := strings.TrimSpace(p.getenv(name))
	if endpoint == "" {
		name = "OTEL_EXPORTER_OTLP_ENDPOINT"
		if base := strings.TrimSpace(p.getenv(name)); base != "" {
			// The generic endpoint is a base URL; each signal has its path.
			endpoint = strings.TrimRight(base, "/") + "/v1/traces"
		}
	}
	if endpoint == "" {
		return o
	}
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.problem("%s: %q is not an http(s) URL", name, secret.RedactURL(endpoint))
	}
	for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if proto := strings.TrimSpace(p.getenv(v)); proto != "" && proto != "http/protobuf" {
			p.problem("%s: %q is not supported; cardbridge exports OTLP over HTTP (http/protobuf, port 4318)", v, proto)
		}
	}
	o.TracesURL = endpoint
	return o
}

// OperationsFromEnv reads only the operations settings (the console's
// credential and tracing), for commands such as `cardbridge dev` that take
// the rest of their configuration from elsewhere.
func OperationsFromEnv(getenv func(string) string) (Operations, error) {
	p := &parser{getenv: getenv}
	ops := p.operations()
	if len(p.problems) > 0 {
		return ops, &Error{Problems: p.problems}
	}
	return ops, nil
}
