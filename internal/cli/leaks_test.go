package cli

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

// natsWithPassword starts a NATS server that wants a user and password,
// and returns its host:port.
func natsWithPassword(t *testing.T, user, password string) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, Username: user, Password: password, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	addr := s.Addr().(*net.TCPAddr)
	return net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))
}

// TestNoPasswordOfAURLIsPrinted: replay and publish name the NATS server
// they could not reach, never its password or token, whatever form
// NATS_URL takes; so does the configuration error for MBANQ_BASE_URL.
func TestNoPasswordOfAURLIsPrinted(t *testing.T) {
	t.Parallel()
	const (
		password = "n4ts-pa55word-7c1e"
		token    = "n4ts-t0ken-9a2f"
		bankPass = "mb4nq-pa55word-3d8b"
	)
	host := natsWithPassword(t, "cardbridge", "the-right-one-4b6d")
	db := testenv.DatabaseURL(t)
	for name, natsURL := range map[string]string{
		"password":         "nats://cardbridge:" + password + "@" + host,
		"token":            "nats://" + token + "@" + host,
		"list":             "nats://cardbridge:" + password + "@" + host + ",nats://" + token + "@" + host,
		"no scheme":        "cardbridge:" + password + "@" + host,
		"does not parse":   "nats://cardbridge:" + password + "@bad host:4222",
		"unescaped quotes": "nats://cardbridge:\"" + password + "@" + host,
	} {
		t.Run(name, func(t *testing.T) {
			vars := map[string]string{"DATABASE_URL": db, "NATS_URL": natsURL}
			for _, args := range [][]string{
				{"replay", "--id", "1"},
				{"publish", "--client-id", "1", "--employee-id", "E-1", "--first-name", "Ada", "--last-name", "Lovelace"},
			} {
				code, stdout, stderr := run(t, vars, args...)
				require.Equal(t, 1, code, stderr)
				require.Contains(t, stderr, "connecting to NATS at ")
				require.Contains(t, stderr, "xxxxx@", "the server is still named")
				for _, s := range []string{password, token} {
					require.NotContains(t, stdout+stderr, s)
				}
			}
		})
	}

	code, _, stderr := run(t, map[string]string{"MBANQ_BASE_URL": "ftp://bank:" + bankPass + "@mbanq.example"}, "run")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `MBANQ_BASE_URL: "ftp://bank:xxxxx@mbanq.example" is not an http(s) URL`)
	require.NotContains(t, stderr, bankPass)
}
