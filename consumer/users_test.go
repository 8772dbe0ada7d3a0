package consumer

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

type userBundle struct {
	store *store.Store
	sb    *sandbox.Server
	bank  *mbanq.Client
	key   []byte
	cfg   Config
}

func setupUsers(t *testing.T) *userBundle {
	t.Helper()
	seed := sandbox.DefaultSeed()
	sb := sandbox.New(seed)
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	bank, err := mbanq.New(mbanq.Config{BaseURL: srv.URL, TenantID: seed.TenantID,
		ClientID: seed.OAuthClient.ID, ClientSecret: seed.OAuthClient.Secret})
	require.NoError(t, err)
	return &userBundle{
		store: testenv.Store(t),
		sb:    sb,
		bank:  bank,
		key:   testenv.SecretKey(t),
		cfg: Config{Admin: mbanq.Credentials{Username: seed.Admin.Username, Password: seed.Admin.Password},
			OfficeID: 1, Source: "urn:test"},
	}
}

// directory is a fresh userDirectory, as a freshly started process has.
func (b *userBundle) directory(t *testing.T, previous ...[]byte) *userDirectory {
	box, err := secret.NewBox(b.key, previous...)
	require.NoError(t, err)
	return newUserDirectory(b.store, b.bank, box, b.cfg, slog.New(slog.DiscardHandler))
}

func (b *userBundle) selfServiceUsers() int {
	n := 0
	for _, u := range b.sb.Users() {
		if u.IsSelfServiceUser {
			n++
		}
	}
	return n
}

// orderWith proves a session works: its user can order a card for client 1.
func orderWith(t *testing.T, s *mbanq.Session, key string) {
	_, err := s.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, key)
	require.NoError(t, err)
}

func TestProvisioningCreatesOneUserAndReusesIt(t *testing.T) {
	t.Parallel()
	b := setupUsers(t)
	ctx := context.Background()
	s, err := b.directory(t).session(ctx, 1)
	require.NoError(t, err)
	orderWith(t, s, "k1")
	// Another process, later: the same user, no second one.
	s2, err := b.directory(t).session(ctx, 1)
	require.NoError(t, err)
	orderWith(t, s2, "k2")
	require.Equal(t, 1, b.selfServiceUsers())
	u, err := b.store.SelfServiceUser(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, store.UserActive, u.Status)
	mb, ok := b.sb.UserByUsername(u.Username)
	require.True(t, ok)
	require.Equal(t, mb.ID, u.MBanqUserID)
	require.Equal(t, []int64{1}, mb.Clients, "the user's scope is its client")
}

func TestProvisioningConcurrentProcessesMakeOneUser(t *testing.T) {
	t.Parallel()
	b := setupUsers(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = b.directory(t).session(ctx, 1)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, b.selfServiceUsers())
}

// A crash after the intent was recorded but before MBanq was called: the
// next process finishes with the recorded name and password.
func TestProvisioningResumesAfterCrashBeforeBankCall(t *testing.T) {
	t.Parallel()
	b := setupUsers(t)
	ctx := context.Background()
	_, err := b.directory(t).recordIntent(ctx, 1)
	require.NoError(t, err)
	require.Zero(t, b.selfServiceUsers())

	s, err := b.directory(t).session(ctx, 1)
	require.NoError(t, err)
	orderWith(t, s, "k")
	require.Equal(t, 1, b.selfServiceUsers())
}

// A crash after MBanq created the user but before it was marked active,
// with MBanq's idempotency record gone (the name is then reported taken):
// the user is adopted and its password set to the one we hold.
func TestProvisioningAdoptsUserCreatedBeforeCrash(t *testing.T) {
	t.Parallel()
	b := setupUsers(t)
	ctx := context.Background()
	d := b.directory(t)
	row, err := d.recordIntent(ctx, 1)
	require.NoError(t, err)
	// The user exists at the bank with some other password, created under
	// another idempotency key.
	_, err = d.admin.CreateUser(ctx, mbanq.CreateUserRequest{
		Username: row.Username, Firstname: "cardbridge", Lastname: "client 1", OfficeID: 1,
		Roles: []int64{sandbox.DefaultSelfServiceRoleID}, Clients: []int64{1}, IsSelfServiceUser: true,
		Password: secret.New("An0ther-passw0rd!"),
	}, "some-other-key")
	require.NoError(t, err)

	s, err := b.directory(t).session(ctx, 1)
	require.NoError(t, err)
	orderWith(t, s, "k")
	require.Equal(t, 1, b.selfServiceUsers(), "adopted, not duplicated")
}

// A lost answer to the creation: the client's retry carries the same
// Idempotency-Key and gets the stored answer.
func TestProvisioningSurvivesLostResponse(t *testing.T) {
	t.Parallel()
	b := setupUsers(t)
	require.NoError(t, b.sb.SetFaults(sandbox.Faults{LostResponseNext: 1, Paths: []string{"/v1/users"}}))
	s, err := b.directory(t).session(context.Background(), 1)
	require.NoError(t, err)
	orderWith(t, s, "k")
	require.Equal(t, 1, b.selfServiceUsers())
}

// Rotating CARDBRIDGE_SECRET_KEY: a process with the new key and the old
// one as previous opens the password and reseals it under the new key;
// then the old key can go.
func TestKeyRotationResealsPasswords(t *testing.T) {
	t.Parallel()
	b := setupUsers(t)
	ctx := context.Background()
	_, err := b.directory(t).session(ctx, 1)
	require.NoError(t, err)
	u, err := b.store.SelfServiceUser(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, secret.KeyID(b.key), u.SealingKey, "provisioning records the sealing key")

	old := b.key
	b.key = testenv.SecretKey(t)
	_, err = b.directory(t).session(ctx, 1)
	require.ErrorIs(t, err, secret.ErrDecrypt, "the new key alone cannot open the old password")

	s, err := b.directory(t, old).session(ctx, 1)
	require.NoError(t, err)
	orderWith(t, s, "k")
	u, err = b.store.SelfServiceUser(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, secret.KeyID(b.key), u.SealingKey, "the reseal records the new key")

	s, err = b.directory(t).session(ctx, 1) // old key dropped
	require.NoError(t, err)
	orderWith(t, s, "k2")
}

// A password sealed before keys were recorded (sealing_key NULL) gets its
// key recorded on use, so the metric stops counting it as needing an old
// key; its ciphertext is left as it is.
func TestUseRecordsTheKeyOfAPasswordSealedBeforeKeysWereRecorded(t *testing.T) {
	t.Parallel()
	b := setupUsers(t)
	ctx := context.Background()
	_, err := b.directory(t).session(ctx, 1)
	require.NoError(t, err)
	_, err = b.store.Pool().Exec(ctx, `UPDATE self_service_users SET sealing_key = NULL`)
	require.NoError(t, err)
	before, err := b.store.SelfServiceUser(ctx, 1)
	require.NoError(t, err)
	require.Empty(t, before.SealingKey)

	s, err := b.directory(t).session(ctx, 1)
	require.NoError(t, err)
	orderWith(t, s, "k")
	after, err := b.store.SelfServiceUser(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, secret.KeyID(b.key), after.SealingKey)
	require.Equal(t, before.PasswordSealed, after.PasswordSealed)
}
