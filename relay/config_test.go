package relay_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/relay"
	"github.com/cardbridge/cardbridge/store"
)

// newRelay is relay.New for a test whose Config is valid.
func newRelay(t testing.TB, s *store.Store, js jetstream.JetStream, cfg relay.Config) *relay.Relay {
	t.Helper()
	r, err := relay.New(s, js, cfg)
	require.NoError(t, err)
	return r
}

func TestNewRefusesANegativeFieldNamingIt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  relay.Config
		want string
	}{
		{"BatchSize", relay.Config{BatchSize: -1}, "relay: Config.BatchSize -1 must be positive (0 for the default, 500)"},
		{"PollInterval", relay.Config{PollInterval: -5 * time.Second}, "relay: Config.PollInterval -5s must be positive (0 for the default, 1s)"},
		{"SweepAge", relay.Config{SweepAge: -time.Second}, "relay: Config.SweepAge -1s must be positive (0 for the default, 5s)"},
		{"PublishWait", relay.Config{PublishWait: -time.Second}, "relay: Config.PublishWait -1s must be positive (0 for the default, 10s)"},
		{"DrainLimit", relay.Config{DrainLimit: -time.Second}, "relay: Config.DrainLimit -1s must be positive (0 for the default, PublishWait)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := relay.New(nil, nil, tc.cfg)
			require.EqualError(t, err, tc.want)
			require.Nil(t, r)
		})
	}
}

func TestNewNamesEveryNegativeField(t *testing.T) {
	t.Parallel()
	_, err := relay.New(nil, nil, relay.Config{BatchSize: -1, SweepAge: -time.Second})
	require.ErrorContains(t, err, "Config.BatchSize")
	require.ErrorContains(t, err, "Config.SweepAge")
}

func TestNewTakesZeroForTheDefaults(t *testing.T) {
	t.Parallel()
	r, err := relay.New(nil, nil, relay.Config{})
	require.NoError(t, err)
	require.NotNil(t, r)
}
