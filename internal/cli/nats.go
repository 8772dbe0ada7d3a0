package cli

import (
	"flag"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/secret"
)

// natsURLFlag adds --nats-url, defaulting to NATS_URL or the local server.
func natsURLFlag(fs *flag.FlagSet, env Env) *string {
	return fs.String("nats-url", env.getenvOr("NATS_URL", config.DefaultNATSURL), "NATS server (NATS_URL)")
}

// connect opens a NATS connection named after the command and its
// JetStream context. Close the connection when done.
func connect(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name("cardbridge "+name), nats.Timeout(10*time.Second))
	if err != nil {
		// NATS_URL may carry a password or a token, and an error about a
		// URL that does not parse quotes it whole.
		return nil, nil, fmt.Errorf("connecting to NATS at %s: %s", secret.RedactURL(url), secret.RedactURLIn(err.Error(), url))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
