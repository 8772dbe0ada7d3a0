package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

func run(t *testing.T, vars map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = Main(context.Background(), args, Env{Getenv: func(k string) string { return vars[k] }, Stdout: &out, Stderr: &errOut})
	return code, out.String(), errOut.String()
}

func TestRunRefusesIncompleteConfigurationNamingEveryProblem(t *testing.T) {
	t.Parallel()
	code, _, stderr := run(t, map[string]string{"MBANQ_CLIENT_SECRET": "s3cr3t-value", "CARDBRIDGE_SECRET_KEY": "short"}, "run")
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
	for _, name := range []string{"DATABASE_URL", "NATS_URL", "MBANQ_BASE_URL", "MBANQ_TENANT_ID", "MBANQ_CLIENT_ID", "MBANQ_ADMIN_USERNAME", "MBANQ_ADMIN_PASSWORD", "CARDBRIDGE_SECRET_KEY"} {
		require.Contains(t, stderr, name)
	}
	require.NotContains(t, stderr, "s3cr3t-value")
}

func TestHelpAndUsage(t *testing.T) {
	t.Parallel()
	for _, c := range commands() {
		code, stdout, _ := run(t, nil, c.name, "--help")
		require.Equal(t, 0, code, c.name)
		require.Contains(t, stdout, "Usage: cardbridge "+c.name, c.name)
	}
	code, stdout, _ := run(t, nil, "--help")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "bindings")
	code, _, stderr := run(t, nil, "frobnicate")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "unknown command")
	code, _, stderr = run(t, nil, "bindings", "add", "--source", "urn:x")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "--client-id")
}

func TestMigrateAndBindings(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"DATABASE_URL": testenv.DatabaseURL(t)}
	code, stdout, stderr := run(t, vars, "migrate", "status")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "pending")
	code, stdout, stderr = run(t, vars, "migrate", "up")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "applied")

	code, _, stderr = run(t, vars, "bindings", "add", "--source", "urn:erp:acme", "--client-id", "7", "--savings-account-id", "70", "--card-product-id", "1")
	require.Equal(t, 0, code, stderr)
	code, stdout, _ = run(t, vars, "bindings", "list")
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "urn:erp:acme")
	require.Contains(t, stdout, "70")
	code, _, _ = run(t, vars, "bindings", "remove", "--source", "urn:erp:acme", "--client-id", "7")
	require.Equal(t, 0, code)
	code, _, stderr = run(t, vars, "bindings", "remove", "--source", "urn:erp:acme", "--client-id", "7")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "no binding")
}
