package cli

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

// keysFixture is a migrated database and the keys of a rotation: old is
// CARDBRIDGE_SECRET_KEY_PREVIOUS, current is CARDBRIDGE_SECRET_KEY, lost is
// a key nobody configures any more.
type keysFixture struct {
	vars               map[string]string
	store              *store.Store
	old, current, lost []byte
	// outputs collects everything the commands printed, to check that no
	// password or key is ever in it.
	outputs []string
}

func newKeysFixture(t *testing.T) *keysFixture {
	t.Helper()
	f := &keysFixture{
		vars:    map[string]string{"DATABASE_URL": testenv.DatabaseURL(t)},
		old:     testenv.SecretKey(t),
		current: testenv.SecretKey(t),
		lost:    testenv.SecretKey(t),
	}
	f.vars["CARDBRIDGE_SECRET_KEY"] = base64.StdEncoding.EncodeToString(f.current)
	f.vars["CARDBRIDGE_SECRET_KEY_PREVIOUS"] = base64.RawURLEncoding.EncodeToString(f.old)
	code, _, stderr := f.run(t, "migrate", "up")
	require.Equal(t, 0, code, stderr)
	var err error
	f.store, err = store.Open(context.Background(), store.Options{URL: secret.New(f.vars["DATABASE_URL"])})
	require.NoError(t, err)
	t.Cleanup(f.store.Close)
	return f
}

func (f *keysFixture) run(t *testing.T, args ...string) (int, string, string) {
	code, stdout, stderr := run(t, f.vars, args...)
	f.outputs = append(f.outputs, stdout, stderr)
	return code, stdout, stderr
}

func password(clientID int64) string { return fmt.Sprintf("Pw-of-client-%d-7x!Q", clientID) }

// seal records client's user with its password sealed under key, and
// keyID recorded as the sealing key ("" as before keys were recorded).
func (f *keysFixture) seal(t *testing.T, clientID int64, key []byte, keyID string) {
	t.Helper()
	box, err := secret.NewBox(key)
	require.NoError(t, err)
	username := fmt.Sprintf("cardbridge-%d-test", clientID)
	sealed, err := box.Seal(secret.New(password(clientID)), store.SealingContext(clientID, username))
	require.NoError(t, err)
	_, err = f.store.RecordProvisioning(context.Background(),
		store.SelfServiceUser{ClientID: clientID, Username: username, PasswordSealed: sealed, SealingKey: keyID})
	require.NoError(t, err)
}

func (f *keysFixture) users(t *testing.T) []store.SelfServiceUser {
	t.Helper()
	us, err := f.store.SelfServiceUsers(context.Background())
	require.NoError(t, err)
	return us
}

// requireNoSecrets checks that no command printed a password or a key, in
// any encoding the environment or the store uses.
func (f *keysFixture) requireNoSecrets(t *testing.T, clientIDs ...int64) {
	t.Helper()
	out := strings.Join(f.outputs, "\n")
	for _, id := range clientIDs {
		require.NotContains(t, out, password(id))
	}
	for _, k := range [][]byte{f.old, f.current, f.lost} {
		for _, enc := range []string{base64.StdEncoding.EncodeToString(k), base64.RawURLEncoding.EncodeToString(k), hex.EncodeToString(k)} {
			require.NotContains(t, out, enc)
			require.NotContains(t, out, enc[:12], "not even a prefix of a key")
		}
	}
}

// lines flattens a command's output to one space between words, so tests
// do not depend on tabwriter's padding.
func lines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(out, "\n")
}

func TestKeysStatusAndResealAcrossARotation(t *testing.T) {
	t.Parallel()
	f := newKeysFixture(t)
	ctx := context.Background()
	oldID, currentID := secret.KeyID(f.old), secret.KeyID(f.current)
	f.seal(t, 1, f.old, oldID)
	f.seal(t, 2, f.old, oldID)
	f.seal(t, 3, f.old, "")     // sealed before keys were recorded
	f.seal(t, 4, f.current, "") // likewise, under the current key
	f.seal(t, 5, f.current, currentID)
	f.seal(t, 6, f.lost, secret.KeyID(f.lost))

	code, stdout, stderr := f.run(t, "keys", "status")
	require.Equal(t, 0, code, stderr)
	out := lines(stdout)
	for _, want := range []string{
		"sealed under the current key " + currentID + " 1",
		"sealed under an older or unknown key 5",
		"opened by the current key, not yet recorded 1",
		"opened by CARDBRIDGE_SECRET_KEY_PREVIOUS[0] (" + oldID + ") 3",
		"opened by no configured key 1",
		"cardbridge keys reseal seals them under the current key",
		"no configured key opens the password of client 6",
	} {
		require.Contains(t, out, want)
	}

	// A dry run reports what a reseal would do and changes nothing.
	before := f.users(t)
	code, stdout, stderr = f.run(t, "keys", "reseal", "--dry-run")
	require.Equal(t, 1, code, "client 6 cannot be opened, even on a dry run")
	require.Contains(t, stdout, "would reseal 3 passwords under the current key "+currentID)
	require.Contains(t, stdout, "would record the key of 1 passwords already sealed under it")
	require.Contains(t, stderr, "client 6")
	require.Equal(t, before, f.users(t))

	code, stdout, stderr = f.run(t, "keys", "reseal")
	require.Equal(t, 1, code)
	require.Contains(t, stdout, "resealed 3 passwords under the current key "+currentID)
	require.Contains(t, stdout, "recorded the key of 1 passwords already sealed under it")
	require.Contains(t, stdout, "no configured key opens the password of client 6")
	require.Equal(t, "cardbridge keys: no configured key opens the password of client 6: left as it is\n", stderr)

	// The old key can go: the current key alone opens every password but
	// the one no key opened, each recorded under it.
	alone, err := secret.NewBox(f.current)
	require.NoError(t, err)
	for _, u := range f.users(t) {
		p, err := alone.Open(u.PasswordSealed, store.SealingContext(u.ClientID, u.Username))
		if u.ClientID == 6 {
			require.ErrorIs(t, err, secret.ErrDecrypt)
			require.Equal(t, secret.KeyID(f.lost), u.SealingKey, "left as it was")
			continue
		}
		require.NoError(t, err, "client %d", u.ClientID)
		require.Equal(t, password(u.ClientID), p.Reveal())
		require.Equal(t, currentID, u.SealingKey, "client %d", u.ClientID)
	}
	require.Equal(t, before[3].PasswordSealed, f.users(t)[3].PasswordSealed, "client 4 was only recorded, not resealed")

	code, stdout, _ = f.run(t, "keys", "status")
	require.Equal(t, 0, code)
	out = lines(stdout)
	require.Contains(t, out, "sealed under the current key "+currentID+" 5")
	require.Contains(t, out, "sealed under an older or unknown key 1")
	require.Contains(t, out, "opened by CARDBRIDGE_SECRET_KEY_PREVIOUS[0] ("+oldID+") 0")

	// Once the unopenable user is dealt with, nothing needs the old key.
	_, err = f.store.Pool().Exec(ctx, `DELETE FROM self_service_users WHERE client_id = 6`)
	require.NoError(t, err)
	code, stdout, stderr = f.run(t, "keys", "reseal")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "resealed 0 passwords")
	delete(f.vars, "CARDBRIDGE_SECRET_KEY_PREVIOUS")
	code, stdout, stderr = f.run(t, "keys", "status")
	require.Equal(t, 0, code, stderr)
	out = lines(stdout)
	require.Contains(t, out, "sealed under an older or unknown key 0")
	require.Contains(t, out, "no password needs a previous key")

	f.requireNoSecrets(t, 1, 2, 3, 4, 5, 6)
}

// A running process reseals a password between the command's read and its
// write: the command's write, made from a ciphertext that is gone, is
// dropped and the process's value stands.
func TestKeysResealNeverOverwritesAConcurrentReseal(t *testing.T) {
	t.Parallel()
	f := newKeysFixture(t)
	ctx := context.Background()
	f.seal(t, 1, f.old, secret.KeyID(f.old))

	// The "running process" reseals client 1 in a transaction it holds
	// open, so the command reads the old value and then waits for the row.
	box, err := secret.NewBox(f.current, f.old)
	require.NoError(t, err)
	theirs, err := box.Seal(secret.New(password(1)), store.SealingContext(1, "cardbridge-1-test"))
	require.NoError(t, err)
	tx, err := f.store.Pool().Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	var holder int32
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&holder))
	_, err = tx.Exec(ctx, `UPDATE self_service_users SET password_sealed = $1, sealing_key = $2 WHERE client_id = 1`, theirs, box.KeyID())
	require.NoError(t, err)

	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := run(t, f.vars, "keys", "reseal")
		done <- result{code, stdout, stderr}
	}()
	// Commit once the command's write waits on the row (a condition seen in
	// Postgres, not a guess at timing).
	require.Eventually(t, func() bool {
		var waiting int
		err := f.store.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, holder).Scan(&waiting)
		return err == nil && waiting > 0
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, tx.Commit(ctx))

	r := <-done
	f.outputs = append(f.outputs, r.stdout, r.stderr)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "resealed 0 passwords")
	require.Contains(t, r.stdout, "left 1 passwords a running process changed meanwhile")
	u, err := f.store.SelfServiceUser(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, theirs, u.PasswordSealed, "the running process's reseal stands")
	f.requireNoSecrets(t, 1)
}

func TestKeysUsage(t *testing.T) {
	t.Parallel()
	code, _, stderr := run(t, nil, "keys", "rotate")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "want status or reseal")
	code, _, stderr = run(t, map[string]string{"CARDBRIDGE_SECRET_KEY": "not-a-key-but-secret"}, "keys", "status")
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(stderr, "\n"), stderr)
	require.Contains(t, stderr, "CARDBRIDGE_SECRET_KEY")
	require.NotContains(t, stderr, "not-a-key-but-secret")
}
