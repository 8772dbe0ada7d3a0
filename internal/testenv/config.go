package testenv

import (
	"encoding/base64"
	"testing"

	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// Config is the configuration of a cardbridge Service for a test: a schema
// of the test's own, the given NATS server, a bank at bankURL seeded with
// seed, a fresh key, an HTTP listener on a free port, and migrations
// applied at start.
func Config(t testing.TB, natsURL, bankURL string, seed sandbox.Seed) config.Config {
	t.Helper()
	cfg := config.Defaults()
	cfg.DatabaseURL = secret.New(DatabaseURL(t))
	cfg.NATSURL = natsURL
	cfg.MBanq = config.MBanq{
		BaseURL: bankURL, TenantID: seed.TenantID,
		ClientID: seed.OAuthClient.ID, ClientSecret: seed.OAuthClient.Secret,
		AdminUsername: seed.Admin.Username, AdminPassword: seed.Admin.Password,
		OfficeID: 1,
	}
	cfg.SecretKey = SecretKey(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AutoMigrate = true
	return cfg
}

// RunEnv is the environment of a `cardbridge run` process for a test:
// Postgres at dbURL, NATS at natsURL, a bank at bankURL seeded with seed,
// and key as the secret key. Tests append what they tune.
func RunEnv(dbURL, natsURL, bankURL string, seed sandbox.Seed, key []byte) []string {
	return []string{
		"DATABASE_URL=" + dbURL,
		"NATS_URL=" + natsURL,
		"MBANQ_BASE_URL=" + bankURL,
		"MBANQ_TENANT_ID=" + seed.TenantID,
		"MBANQ_CLIENT_ID=" + seed.OAuthClient.ID,
		"MBANQ_CLIENT_SECRET=" + seed.OAuthClient.Secret.Reveal(),
		"MBANQ_ADMIN_USERNAME=" + seed.Admin.Username,
		"MBANQ_ADMIN_PASSWORD=" + seed.Admin.Password.Reveal(),
		"CARDBRIDGE_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
	}
}
