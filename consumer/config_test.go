package consumer_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/consumer"
)

func TestNewRefusesAnInvalidFieldNamingIt(t *testing.T) {
	t.Parallel()
	valid := func(mod func(*consumer.Config)) consumer.Config {
		c := consumer.Config{Source: "urn:cardbridge:test"}
		mod(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  consumer.Config
		want string
	}{
		{"Source", consumer.Config{}, "consumer: Config.Source is required: the CloudEvent source of the outcome events"},
		{"MaxInFlight", valid(func(c *consumer.Config) { c.MaxInFlight = -1 }), "consumer: Config.MaxInFlight -1 must be positive (0 for the default)"},
		{"OfficeID", valid(func(c *consumer.Config) { c.OfficeID = -2 }), "consumer: Config.OfficeID -2 must be positive (0 for the default)"},
		{"SelfServiceRoleID", valid(func(c *consumer.Config) { c.SelfServiceRoleID = -3 }), "consumer: Config.SelfServiceRoleID -3 must be positive (0 to discover it)"},
		{"RetryFor", valid(func(c *consumer.Config) { c.RetryFor = -time.Hour }), "consumer: Config.RetryFor -1h0m0s must be positive (0 for the default)"},
		{"MaxRetryDelay", valid(func(c *consumer.Config) { c.MaxRetryDelay = -time.Second }), "consumer: Config.MaxRetryDelay -1s must be positive (0 for the default)"},
		{"KeyRetention", valid(func(c *consumer.Config) { c.KeyRetention = -time.Second }), "consumer: Config.KeyRetention -1s must be positive (0 for the default)"},
		{"ProbeInterval", valid(func(c *consumer.Config) { c.ProbeInterval = -time.Second }), "consumer: Config.ProbeInterval -1s must be positive (0 for the default)"},
		{"AckWait", valid(func(c *consumer.Config) { c.AckWait = -time.Second }), "consumer: Config.AckWait -1s must be positive (0 for the default)"},
		{"ShutdownGrace", valid(func(c *consumer.Config) { c.ShutdownGrace = -time.Second }), "consumer: Config.ShutdownGrace -1s must be positive (0 for the default)"},
		{"AnsweredAfter", valid(func(c *consumer.Config) { c.AnsweredAfter = -time.Second }), "consumer: Config.AnsweredAfter -1s must be positive (0 for the default)"},
		{"Retention", valid(func(c *consumer.Config) { c.Retention = -time.Hour }), "consumer: Config.Retention -1h0m0s must be positive (0 keeps the records for ever)"},
		{"KeyRetention within the margin", valid(func(c *consumer.Config) { c.KeyRetention = time.Minute }),
			"consumer: Config.KeyRetention 1m0s must be longer than 10m12s (twice the longest retry delay and AckWait); raise it or shorten MaxRetryDelay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := consumer.New(tc.cfg, nil, nil, nil)
			require.EqualError(t, err, tc.want)
			require.Nil(t, c)
		})
	}
}

func TestNewTakesZeroForTheDefaults(t *testing.T) {
	t.Parallel()
	// Every field but Source left zero passes the checks of the Config;
	// what stops New is the missing box, checked after them.
	_, err := consumer.New(consumer.Config{Source: "urn:cardbridge:test"}, nil, nil, nil)
	require.EqualError(t, err, "consumer: a secret box is required to seal the self-service passwords")
}
