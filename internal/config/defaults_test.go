package config_test

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/internal/config"
)

// The consumer owns these defaults. This package refers to its parts'
// (the decision's, the broker's, the bank's) but repeats MaxInFlight and
// OfficeID, since it cannot import the consumer (see the constants); the
// README's table states them all. A change in one place must be made in
// the other.
func TestDefaultsAreTheConsumers(t *testing.T) {
	t.Parallel()
	require.Equal(t, consumer.DefaultRetryFor, config.DefaultRetryFor)
	require.Equal(t, consumer.DefaultMaxRetryDelay, config.DefaultRetryDelayMax)
	require.Equal(t, consumer.DefaultMaxInFlight, config.DefaultMaxInFlight)
	require.EqualValues(t, consumer.DefaultOfficeID, config.DefaultOfficeID)
	require.Equal(t, consumer.DefaultKeyRetention, config.DefaultBankKeyRetention)
	require.Equal(t, consumer.DefaultAckWait, config.DefaultAckWait)
	require.Equal(t, consumer.DefaultRequestSubject, config.DefaultRequestSubject)
	require.Equal(t, consumer.DefaultOutcomeStream, config.DefaultOutcomeStream)
}

func TestLoggingIsReadOnceIntoTypedValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level, format string
		want          config.Logging
	}{
		{"", "", config.Logging{Level: slog.LevelInfo, Format: config.LogFormatAuto}},
		{"debug", "JSON", config.Logging{Level: slog.LevelDebug, Format: config.LogFormatJSON}},
		{"warn", " text ", config.Logging{Level: slog.LevelWarn, Format: config.LogFormatText}},
	} {
		env := map[string]string{"LOG_LEVEL": tc.level, "LOG_FORMAT": tc.format}
		l, err := config.LoggingFromEnv(func(k string) string { return env[k] })
		require.NoError(t, err)
		require.Equal(t, tc.want, l)
	}

	env := map[string]string{"LOG_LEVEL": "loud", "LOG_FORMAT": "xml"}
	_, err := config.LoggingFromEnv(func(k string) string { return env[k] })
	require.ErrorContains(t, err, `LOG_LEVEL: "loud" is not one of debug, info, warn, error`)
	require.ErrorContains(t, err, `LOG_FORMAT: "xml" is not text or json`)
}
