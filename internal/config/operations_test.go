package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOperations(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		env       map[string]string
		traces    string
		token     string
		problem   string
		noProblem bool
	}{
		"nothing set: read-only console, no tracing": {env: nil, noProblem: true},
		"console token": {env: map[string]string{"CARDBRIDGE_CONSOLE_TOKEN": " a-long-enough-token "}, token: "a-long-enough-token", noProblem: true},
		"short token":   {env: map[string]string{"CARDBRIDGE_CONSOLE_TOKEN": "short"}, problem: "CARDBRIDGE_CONSOLE_TOKEN: at least 16"},
		"generic endpoint gets the traces path": {
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, traces: "http://collector:4318/v1/traces", noProblem: true},
		"traces endpoint is used as it is": {
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://b/otlp/traces"}, traces: "https://b/otlp/traces", noProblem: true},
		"disabled SDK": {
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, noProblem: true},
		"exporter none": {
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, noProblem: true},
		"another exporter": {
			env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, problem: "OTEL_TRACES_EXPORTER"},
		"grpc is not offered": {
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, problem: "http/protobuf"},
		"not a URL": {
			env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4318"}, problem: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"},
	} {
		t.Run(name, func(t *testing.T) {
			p := &parser{getenv: func(k string) string { return tc.env[k] }}
			o := p.operations()
			if tc.noProblem {
				require.Empty(t, p.problems)
				require.Equal(t, tc.traces, o.TracesURL)
				require.Equal(t, tc.token, o.ConsoleToken.Reveal())
				return
			}
			require.Len(t, p.problems, 1)
			require.True(t, strings.Contains(p.problems[0], tc.problem), p.problems[0])
		})
	}
}

func TestNoPasswordOfAURLInProblems(t *testing.T) {
	t.Parallel()
	m := valid()
	m["MBANQ_BASE_URL"] = "ftp://bank:mb4nq-pa55-1f2e@mbanq.example"
	m["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "grpc://otel:c0llector-pa55-8a7b@collector:4317"
	_, err := FromEnv(env(m))
	require.Error(t, err)
	require.Contains(t, err.Error(), `MBANQ_BASE_URL: "ftp://bank:xxxxx@mbanq.example" is not an http(s) URL`)
	require.Contains(t, err.Error(), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "grpc://otel:xxxxx@collector:4317" is not an http(s) URL`)
	require.NotContains(t, err.Error(), "pa55")
}

func TestConsoleHosts(t *testing.T) {
	t.Parallel()
	o, err := OperationsFromEnv(env(map[string]string{"CARDBRIDGE_CONSOLE_HOSTS": " Cardbridge.Internal , ops.example:8443,,[2001:db8::1] "}))
	require.NoError(t, err)
	require.Equal(t, []string{"cardbridge.internal", "ops.example:8443", "[2001:db8::1]"}, o.ConsoleHosts)

	o, err = OperationsFromEnv(env(nil))
	require.NoError(t, err)
	require.Empty(t, o.ConsoleHosts)

	for _, bad := range []string{"https://cardbridge.internal", "cardbridge.internal/console", "*", "ops.example:http", "ops.example:0", "user@ops.example"} {
		_, err := OperationsFromEnv(env(map[string]string{"CARDBRIDGE_CONSOLE_HOSTS": "ok.example," + bad}))
		require.Error(t, err, bad)
		require.Contains(t, err.Error(), "CARDBRIDGE_CONSOLE_HOSTS", bad)
	}
}
