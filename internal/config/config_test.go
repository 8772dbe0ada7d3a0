package config

import (
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func valid() map[string]string {
	return map[string]string{
		"DATABASE_URL":          "postgres://u:dbpass@localhost/db",
		"NATS_URL":              "nats://localhost:4222",
		"MBANQ_BASE_URL":        "https://api.cloud.mbanq.com/",
		"MBANQ_TENANT_ID":       "t1",
		"MBANQ_CLIENT_ID":       "c1",
		"MBANQ_CLIENT_SECRET":   "cs-very-secret",
		"MBANQ_ADMIN_USERNAME":  "admin",
		"MBANQ_ADMIN_PASSWORD":  "admin-very-secret",
		"CARDBRIDGE_SECRET_KEY": base64.StdEncoding.EncodeToString(make([]byte, 32)),
	}
}

func TestFromEnvDefaults(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(env(valid()))
	require.NoError(t, err)
	require.Equal(t, "https://api.cloud.mbanq.com", c.MBanq.BaseURL)
	require.EqualValues(t, 1, c.MBanq.OfficeID)
	require.Zero(t, c.MBanq.SelfServiceRoleID, "discovered when unset")
	require.Equal(t, DefaultSource, c.Source)
	require.Equal(t, DefaultHTTPAddr, c.HTTPAddr)
	require.Equal(t, "ERP", c.NATS.RequestStream)
	require.Equal(t, "CARDS", c.NATS.OutcomeStream)
	require.Equal(t, "cardbridge", c.NATS.Consumer)
	require.Equal(t, 6*time.Second, c.NATS.AckWait, "messages of a killed process are redelivered within 10s")
	require.False(t, c.NATS.AckWaitSet)
	require.Len(t, c.SecretKey, 32)
}

func TestFromEnvNamesEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	m := valid()
	delete(m, "NATS_URL")
	delete(m, "MBANQ_TENANT_ID")
	m["MBANQ_BASE_URL"] = "ftp://bank"
	m["MBANQ_OFFICE_ID"] = "zero"
	m["CARDBRIDGE_SECRET_KEY"] = base64.StdEncoding.EncodeToString(make([]byte, 16))
	m["LOG_LEVEL"] = "loud"
	m["CARDBRIDGE_ACK_WAIT"] = "-1s"
	_, err := FromEnv(env(m))
	require.Error(t, err)
	var ce *Error
	require.ErrorAs(t, err, &ce)
	require.Len(t, ce.Problems, 7, ce.Problems)
	for _, name := range []string{"NATS_URL", "MBANQ_TENANT_ID", "MBANQ_BASE_URL", "MBANQ_OFFICE_ID", "CARDBRIDGE_SECRET_KEY", "LOG_LEVEL", "CARDBRIDGE_ACK_WAIT"} {
		require.Contains(t, err.Error(), name)
	}
	require.Contains(t, err.Error(), "CARDBRIDGE_SECRET_KEY: key decodes to 16 bytes: it must be 32 random bytes, base64-encoded")
}

func TestFromEnvNeverEchoesSecrets(t *testing.T) {
	t.Parallel()
	m := valid()
	m["CARDBRIDGE_SECRET_KEY"] = "not base64 but secret-ish!!"
	delete(m, "NATS_URL")
	_, err := FromEnv(env(m))
	require.Error(t, err)
	for _, s := range []string{"dbpass", "cs-very-secret", "admin-very-secret", "secret-ish"} {
		require.NotContains(t, err.Error(), s)
	}
	require.Contains(t, err.Error(), "CARDBRIDGE_SECRET_KEY: key is not base64: it must be 32 random bytes, base64-encoded", "the fix is named")
	c, err := FromEnv(env(valid()))
	require.NoError(t, err)
	require.False(t, strings.Contains(strings.ToLower(c.DatabaseURL.String()), "dbpass"))
}

func TestFromEnvAcceptsPreviousKeys(t *testing.T) {
	t.Parallel()
	m := valid()
	k := base64.StdEncoding.EncodeToString(make([]byte, 32))
	m["CARDBRIDGE_SECRET_KEY_PREVIOUS"] = k + ", " + k
	c, err := FromEnv(env(m))
	require.NoError(t, err)
	require.Len(t, c.PreviousSecretKeys, 2)
}

func TestSecretKeysReadsOnlyTheKeys(t *testing.T) {
	t.Parallel()
	k := base64.StdEncoding.EncodeToString(make([]byte, 32))
	key, previous, err := SecretKeys(env(map[string]string{"CARDBRIDGE_SECRET_KEY": k, "CARDBRIDGE_SECRET_KEY_PREVIOUS": k}))
	require.NoError(t, err)
	require.Len(t, key, 32)
	require.Len(t, previous, 1)

	_, _, err = SecretKeys(env(map[string]string{"CARDBRIDGE_SECRET_KEY_PREVIOUS": "secret-ish"}))
	require.ErrorContains(t, err, "CARDBRIDGE_SECRET_KEY is required")
	require.ErrorContains(t, err, "CARDBRIDGE_SECRET_KEY_PREVIOUS[0]")
	require.NotContains(t, err.Error(), "secret-ish")
}

func TestRetryBudgetIsTime(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(env(valid()))
	require.NoError(t, err)
	require.Equal(t, 24*time.Hour, c.RetryFor)
	require.Equal(t, 5*time.Minute, c.RetryDelayMax)
	require.Empty(t, c.Warnings)

	m := valid()
	m["CARDBRIDGE_RETRY_FOR"], m["CARDBRIDGE_RETRY_DELAY_MAX"] = "36h", "1m"
	m["CARDBRIDGE_MAX_DELIVER"] = "20"
	c, err = FromEnv(env(m))
	require.NoError(t, err)
	require.Equal(t, 36*time.Hour, c.RetryFor)
	require.Equal(t, time.Minute, c.RetryDelayMax)
	require.Len(t, c.Warnings, 1, "the old setting is named, not silently ignored")
	require.Contains(t, c.Warnings[0], "CARDBRIDGE_RETRY_FOR")

	m["CARDBRIDGE_RETRY_FOR"] = "20"
	_, err = FromEnv(env(m))
	require.ErrorContains(t, err, "CARDBRIDGE_RETRY_FOR")
}

func TestRetentionSettings(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(env(valid()))
	require.NoError(t, err)
	require.Equal(t, 90*24*time.Hour, c.Retention)
	require.Equal(t, 30*24*time.Hour, c.DeadLetterBodyRetention)
	m := valid()
	m["CARDBRIDGE_RETENTION"], m["CARDBRIDGE_DEAD_LETTER_BODY_RETENTION"] = "24h", "72h"
	_, err = FromEnv(env(m))
	require.ErrorContains(t, err, "CARDBRIDGE_RETENTION: 24h0m0s is less than 48h")
	require.ErrorContains(t, err, "CARDBRIDGE_DEAD_LETTER_BODY_RETENTION")
}

func TestFromEnvBankSettings(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(env(valid()))
	require.NoError(t, err)
	require.Zero(t, c.MBanq.RequestTimeout, "unset: the client's default")
	require.True(t, c.MBanq.AdaptiveLimit, "the limiter is on by default")

	m := valid()
	m["MBANQ_REQUEST_TIMEOUT"] = "45s"
	m["MBANQ_CONNECT_TIMEOUT"] = "2s"
	m["MBANQ_TLS_HANDSHAKE_TIMEOUT"] = "3s"
	m["MBANQ_ADAPTIVE_LIMIT"] = "false"
	c, err = FromEnv(env(m))
	require.NoError(t, err)
	require.Equal(t, 45*time.Second, c.MBanq.RequestTimeout)
	require.Equal(t, 2*time.Second, c.MBanq.ConnectTimeout)
	require.Equal(t, 3*time.Second, c.MBanq.TLSHandshakeTimeout)
	require.False(t, c.MBanq.AdaptiveLimit)

	m = valid()
	m["MBANQ_REQUEST_TIMEOUT"] = "0s"
	m["MBANQ_ADAPTIVE_LIMIT"] = "sometimes"
	_, err = FromEnv(env(m))
	require.ErrorContains(t, err, "MBANQ_REQUEST_TIMEOUT")
	require.ErrorContains(t, err, "MBANQ_ADAPTIVE_LIMIT")

	m = valid()
	m["MBANQ_REQUEST_TIMEOUT"] = "2s"
	m["MBANQ_CONNECT_TIMEOUT"] = "5s"
	_, err = FromEnv(env(m))
	require.ErrorContains(t, err, "MBANQ_CONNECT_TIMEOUT: 5s is longer than MBANQ_REQUEST_TIMEOUT (2s)")
}

func TestFromEnvConnectTimeoutWithinTheDefaultRequestTimeout(t *testing.T) {
	t.Parallel()
	m := valid()
	m["MBANQ_CONNECT_TIMEOUT"] = "20s"
	_, err := FromEnv(env(m))
	require.ErrorContains(t, err, "MBANQ_CONNECT_TIMEOUT: 20s is longer than MBANQ_REQUEST_TIMEOUT's default (15s)")
}

func TestAckWait(t *testing.T) {
	t.Parallel()
	m := valid()
	m["CARDBRIDGE_ACK_WAIT"] = "20s"
	c, err := FromEnv(env(m))
	require.NoError(t, err)
	require.Equal(t, 20*time.Second, c.NATS.AckWait)
	require.True(t, c.NATS.AckWaitSet, "set by the operator: an existing consumer is brought to it")

	m["CARDBRIDGE_ACK_WAIT"] = "500ms"
	_, err = FromEnv(env(m))
	require.ErrorContains(t, err, "CARDBRIDGE_ACK_WAIT: 500ms is shorter than 1s")
}

func TestStreamReplicas(t *testing.T) {
	t.Parallel()
	c, err := FromEnv(env(valid()))
	require.NoError(t, err)
	require.Zero(t, c.NATS.StreamReplicas, "unset: as the deployment can give")
	for v, want := range map[string]int{"1": 1, " 3 ": 3, "5": 5, "auto": 0, "AUTO": 0} {
		m := valid()
		m["CARDBRIDGE_STREAM_REPLICAS"] = v
		c, err := FromEnv(env(m))
		require.NoError(t, err, v)
		require.Equal(t, want, c.NATS.StreamReplicas, v)
	}
	for _, v := range []string{"0", "6", "-1", "three", "3.0"} {
		m := valid()
		m["CARDBRIDGE_STREAM_REPLICAS"] = v
		_, err := FromEnv(env(m))
		require.ErrorContains(t, err, "CARDBRIDGE_STREAM_REPLICAS: \""+v+"\" is not a number of replicas from 1 to 5, or auto", v)
	}
}

// `run` builds its logger from what FromEnv read.
func TestFromEnvReadsLogging(t *testing.T) {
	c, err := FromEnv(env(valid()))
	require.NoError(t, err)
	require.Equal(t, Logging{Level: slog.LevelInfo, Format: LogFormatAuto}, c.Logging)

	m := valid()
	m["LOG_LEVEL"], m["LOG_FORMAT"] = "error", "json"
	c, err = FromEnv(env(m))
	require.NoError(t, err)
	require.Equal(t, Logging{Level: slog.LevelError, Format: LogFormatJSON}, c.Logging)
}
