package store_test

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

// storeSealingUnder is a migrated store told that keyID is the current
// sealing key, as `cardbridge run` opens it.
func storeSealingUnder(t *testing.T, keyID string) *store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{URL: secret.New(testenv.DatabaseURL(t)), SealingKey: keyID})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	require.NoError(t, s.MigrateUp(ctx, io.Discard))
	return s
}

func TestSealingKeysAreRecordedAndCounted(t *testing.T) {
	t.Parallel()
	s := storeSealingUnder(t, "cur")
	ctx := context.Background()
	for _, u := range []store.SelfServiceUser{
		{ClientID: 1, Username: "u1", PasswordSealed: []byte("s1"), SealingKey: "cur"},
		{ClientID: 2, Username: "u2", PasswordSealed: []byte("s2"), SealingKey: "old"},
		{ClientID: 3, Username: "u3", PasswordSealed: []byte("s3")}, // key unknown
		{ClientID: 4, Username: "u4", PasswordSealed: []byte("s4"), SealingKey: "cur"},
	} {
		got, err := s.RecordProvisioning(ctx, u)
		require.NoError(t, err)
		require.Equal(t, u.SealingKey, got.SealingKey)
	}

	byKey, err := s.SealingKeyCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]int64{"cur": 2, "old": 1, "": 1}, byKey)
	current, previous, err := s.SealedPasswordCounts(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, current)
	require.EqualValues(t, 2, previous, "an older key and an unknown one")

	stale, err := s.UsersNotSealedUnder(ctx, "cur")
	require.NoError(t, err)
	require.Len(t, stale, 2)
	require.EqualValues(t, 2, stale[0].ClientID)
	require.Equal(t, "old", stale[0].SealingKey)
	require.EqualValues(t, 3, stale[1].ClientID)
	require.Equal(t, "", stale[1].SealingKey)

	// A store not told the current key cannot say what is current.
	_, _, err = testenv.Store(t).SealedPasswordCounts(ctx)
	require.ErrorContains(t, err, "SealingKey")
}

func TestResealPasswordNeverOverwritesAConcurrentReseal(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	_, err := s.RecordProvisioning(ctx, store.SelfServiceUser{ClientID: 5, Username: "u5", PasswordSealed: []byte("under-old"), SealingKey: "old"})
	require.NoError(t, err)

	// Two resealers read the same row; the first to write wins.
	done, err := s.ResealPassword(ctx, 5, []byte("under-old"), []byte("by-process-a"), "new")
	require.NoError(t, err)
	require.True(t, done)
	done, err = s.ResealPassword(ctx, 5, []byte("under-old"), []byte("by-process-b"), "newer")
	require.NoError(t, err)
	require.False(t, done, "made from a ciphertext that is gone")
	u, err := s.SelfServiceUser(ctx, 5)
	require.NoError(t, err)
	require.Equal(t, "by-process-a", string(u.PasswordSealed))
	require.Equal(t, "new", u.SealingKey)

	// Resealing a value with itself records its key.
	done, err = s.ResealPassword(ctx, 5, []byte("by-process-a"), []byte("by-process-a"), "newest")
	require.NoError(t, err)
	require.True(t, done)
	u, err = s.SelfServiceUser(ctx, 5)
	require.NoError(t, err)
	require.Equal(t, "newest", u.SealingKey)

	done, err = s.ResealPassword(ctx, 404, []byte("x"), []byte("y"), "new")
	require.NoError(t, err)
	require.False(t, done, "no such row")
}
