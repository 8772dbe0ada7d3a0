package secret_test

import (
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/secret"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{
		"":                                  "",
		"nats://127.0.0.1:4222":             "nats://127.0.0.1:4222",
		"https://api.cloud.mbanq.com":       "https://api.cloud.mbanq.com",
		"https://bank:s3cret@mbanq.example": "https://bank:xxxxx@mbanq.example",
		"https://bank@mbanq.example/v1":     "https://bank@mbanq.example/v1", // a user name alone is no secret
		"nats://u:p4ss@h1:4222,nats://u:p4ss@h2:4222":    "nats://u:xxxxx@h1:4222,nats://u:xxxxx@h2:4222",
		"nats://u:p4ss@h1:4222, tls://v:w0rd@h2:4222":    "nats://u:xxxxx@h1:4222, tls://v:xxxxx@h2:4222",
		"nats://s3cr3t-token@h1:4222":                    "nats://xxxxx@h1:4222",
		"s3cr3t-token@h1:4222,u:p4ss@h2":                 "xxxxx@h1:4222,u:xxxxx@h2",
		"wss://s3cr3t-token@h1:443/path":                 "wss://xxxxx@h1:443/path",
		"postgres://u:p4ss@db:5432/x?sslmode=disable":    "postgres://u:xxxxx@db:5432/x?sslmode=disable",
		"https://u:p@ss/w,rd?#@mbanq.example/x":          "https://u:xxxxx@mbanq.example/x", // unescaped, does not parse
		"https://u:a,b@mbanq.example":                    "https://u:xxxxx@mbanq.example",
		"nats://u:p4ss@bad host:4222":                    "nats://u:xxxxx@bad host:4222",
		"https://u:p%40ss@mbanq.example/x?y=1#frag":      "https://u:xxxxx@mbanq.example/x?y=1#frag",
		"NATS://S3CR3T@h":                                "NATS://xxxxx@h",
		"nats://h1:4222,nats://u:p4ss@h2:4222,nats://h3": "nats://h1:4222,nats://u:xxxxx@h2:4222,nats://h3",
	} {
		require.Equal(t, want, secret.RedactURL(raw), raw)
	}
	// Where both parse, the masking is url.URL.Redacted's.
	for _, raw := range []string{"https://bank:s3cret@mbanq.example/v1?x=1", "http://u:p@127.0.0.1:8090"} {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		require.Equal(t, u.Redacted(), secret.RedactURL(raw))
	}
}

func TestRedactURLIn(t *testing.T) {
	t.Parallel()
	raw := "nats://u:p4ss@h1:4222, nats://u:p\"4ss@bad host:4222/"
	_, perr := url.Parse("nats://u:p\"4ss@bad host:4222")
	require.Error(t, perr)
	err := fmt.Errorf("connecting: %w", errors.Join(perr, errors.New("servers "+raw)))
	text := secret.RedactURLIn(err.Error(), raw)
	require.NotContains(t, text, "p4ss")
	require.Contains(t, text, "bad host:4222")
	require.Contains(t, text, "u:xxxxx@h1:4222")
	require.Equal(t, "no URL in it", secret.RedactURLIn("no URL in it", raw))
}
