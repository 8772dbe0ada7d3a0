// Package testenv gives tests the real services they run against: a
// Postgres schema of their own on the local server, and an embedded NATS
// JetStream server of their own. A missing Postgres fails the test; it is
// never skipped.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/store"
)

// DefaultDatabaseURL is the local server's test database; override with
// CARDBRIDGE_TEST_DATABASE_URL.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func baseURL() string {
	if u := os.Getenv("CARDBRIDGE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultDatabaseURL
}

// DatabaseURL creates an empty schema for this test and returns a
// connection string whose search_path is that schema. The schema is
// dropped when the test ends.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, baseURL())
	if err != nil {
		t.Fatalf("testenv: Postgres is required at %s (set CARDBRIDGE_TEST_DATABASE_URL): %v", redact(baseURL()), err)
	}
	defer conn.Close(ctx)
	schema := "t_" + randomHex(8)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("testenv: creating schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, baseURL())
		if err != nil {
			t.Errorf("testenv: dropping schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("testenv: dropping schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(baseURL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Database creates an empty database for this test, for what works on a
// whole database rather than a schema (cardbridge dev keeps its own schema
// in whichever database it is given), and returns its URL. It is dropped
// when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, baseURL())
	if err != nil {
		t.Fatalf("testenv: Postgres is required at %s (set CARDBRIDGE_TEST_DATABASE_URL): %v", redact(baseURL()), err)
	}
	defer conn.Close(ctx)
	name := "t_" + randomHex(8)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testenv: creating database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, baseURL())
		if err != nil {
			t.Errorf("testenv: dropping database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: dropping database %s: %v", name, err)
		}
	})
	u, err := url.Parse(baseURL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Store opens a migrated store in a schema of the test's own.
func Store(t testing.TB) *store.Store {
	t.Helper()
	return StoreAt(t, DatabaseURL(t))
}

// StoreAt opens a migrated store at dbURL (from DatabaseURL), for a test
// that also hands the URL to another process.
func StoreAt(t testing.TB, dbURL string) *store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{URL: secret.New(dbURL)})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(s.Close)
	if err := s.MigrateUp(ctx, discard{}); err != nil {
		t.Fatalf("testenv: migrating: %v", err)
	}
	return s
}

// NATS starts an embedded JetStream server for this test.
func NATS(t testing.TB) *broker.Embedded {
	t.Helper()
	srv, err := broker.StartEmbedded(t.TempDir(), 0)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// JetStream connects to url.
func JetStream(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(15*time.Second))
	if err != nil {
		t.Fatalf("testenv: connecting to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return nc, js
}

// SecretKey is a fresh random key.
func SecretKey(t testing.TB) []byte {
	k := make([]byte, secret.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
