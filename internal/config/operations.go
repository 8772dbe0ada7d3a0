package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// Operations configures what the people running cardbridge use: the
// console's credential and where traces go.
type Operations struct {
	// ConsoleToken guards the web console and enables its actions
	// (CARDBRIDGE_CONSOLE_TOKEN). Empty: the console is read-only and
	// answers only on loopback connections.
	ConsoleToken secret.String
	// ConsoleHosts are the names, besides localhost, the loopback addresses
	// and the address a connection reached, that the console answers to in
	// the Host header (CARDBRIDGE_CONSOLE_HOSTS, comma separated): host, or
	// host:port for that port only.
	ConsoleHosts []string
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
	o.ConsoleHosts = p.hosts("CARDBRIDGE_CONSOLE_HOSTS")

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

// hosts reads a comma-separated list of host names, each possibly with a
// port, as they appear in a Host header.
func (p *parser) hosts(name string) []string {
	raw := strings.TrimSpace(p.getenv(name))
	if raw == "" {
		return nil
	}
	var hosts []string
	for _, h := range strings.Split(raw, ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			continue
		}
		host := h
		if hp, port, err := net.SplitHostPort(h); err == nil {
			if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
				p.problem("%s: %q: the port is not a number from 1 to 65535", name, h)
				continue
			}
			host = hp
		}
		if host == "" || strings.ContainsAny(host, "/@?#\\ \t*") || strings.Contains(host, "://") {
			p.problem("%s: %q is not a host name or host:port (e.g. cardbridge.internal or cardbridge.internal:8080)", name, h)
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts
}
