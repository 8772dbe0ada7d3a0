package consumer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/store"
)

// userDirectory maps a client to the MBanq session of its self-service
// user, provisioning the user through the admin API on first use.
//
// Provisioning is crash safe: the username and the sealed password are
// committed before MBanq is asked to create the user, and the creation
// carries an Idempotency-Key fixed by the username. A crash at any point
// leaves a row from which the next attempt finishes the job; it never
// creates a second user for the client or loses the password of the first.
type userDirectory struct {
	store *store.Store
	bank  *mbanq.Client
	box   *secret.Box
	cfg   Config
	log   *slog.Logger

	admin  *mbanq.Session
	flight singleflight.Group

	mu       sync.Mutex
	sessions map[int64]*mbanq.Session
	roleID   int64
}

func newUserDirectory(s *store.Store, bank *mbanq.Client, box *secret.Box, cfg Config, log *slog.Logger) *userDirectory {
	return &userDirectory{
		store:    s,
		bank:     bank,
		box:      box,
		cfg:      cfg,
		log:      log,
		admin:    bank.As(cfg.Admin),
		sessions: map[int64]*mbanq.Session{},
		roleID:   cfg.SelfServiceRoleID,
	}
}

// session returns the session of clientID's self-service user. Concurrent
// callers for one client share one lookup.
func (u *userDirectory) session(ctx context.Context, clientID int64) (*mbanq.Session, error) {
	u.mu.Lock()
	s, ok := u.sessions[clientID]
	u.mu.Unlock()
	if ok {
		return s, nil
	}
	v, err, _ := u.flight.Do(strconv.FormatInt(clientID, 10), func() (any, error) {
		return u.load(ctx, clientID)
	})
	if err != nil {
		return nil, err
	}
	return v.(*mbanq.Session), nil
}

// forget drops a cached session whose credentials MBanq refused, so the
// next request reloads the user.
func (u *userDirectory) forget(clientID int64) {
	u.mu.Lock()
	delete(u.sessions, clientID)
	u.mu.Unlock()
}

func (u *userDirectory) load(ctx context.Context, clientID int64) (*mbanq.Session, error) {
	row, err := u.store.SelfServiceUser(ctx, clientID)
	if errors.Is(err, store.ErrNotFound) {
		row, err = u.recordIntent(ctx, clientID)
	}
	if err != nil {
		return nil, err
	}
	ad := store.SealingContext(row.ClientID, row.Username)
	password, key, err := u.box.OpenKey(row.PasswordSealed, ad)
	if err != nil {
		return nil, fmt.Errorf("opening password of self-service user %s: %w", row.Username, err)
	}
	if key != secret.KeyPrimary || row.SealingKey != u.box.KeyID() {
		u.reseal(ctx, row, password, key)
	}
	if row.Status == store.UserProvisioning {
		if err := u.provision(ctx, row, password); err != nil {
			return nil, err
		}
	}
	s := u.bank.As(mbanq.Credentials{Username: row.Username, Password: password})
	u.mu.Lock()
	u.sessions[clientID] = s
	u.mu.Unlock()
	return s, nil
}

// openPassword checks that the stored password of clientID's user opens
// under the configured keys: how a process paused for its secret key finds
// out that the fault cleared.
func (u *userDirectory) openPassword(ctx context.Context, clientID int64) error {
	row, err := u.store.SelfServiceUser(ctx, clientID)
	if err != nil {
		return err
	}
	_, _, err = u.box.OpenStale(row.PasswordSealed, store.SealingContext(row.ClientID, row.Username))
	return err
}

// reseal seals a password opened under a previous CARDBRIDGE_SECRET_KEY
// under the current one, so the old key can be retired, or records the key
// of one sealed under the current key before keys were recorded, so that
// cardbridge_sealed_passwords counts it as current. A failure costs only
// the chance: the password in hand is good, and `cardbridge keys reseal`
// catches up.
func (u *userDirectory) reseal(ctx context.Context, row store.SelfServiceUser, password secret.String, key int) {
	sealed := row.PasswordSealed
	if key != secret.KeyPrimary {
		var err error
		if sealed, err = u.box.Seal(password, store.SealingContext(row.ClientID, row.Username)); err != nil {
			u.log.Warn("resealing password under the current key", "client_id", row.ClientID, "err", err)
			return
		}
	}
	done, err := u.store.ResealPassword(ctx, row.ClientID, row.PasswordSealed, sealed, u.box.KeyID())
	switch {
	case err != nil:
		u.log.Warn("resealing password under the current key", "client_id", row.ClientID, "err", err)
	case !done:
		// Another process resealed it first; the password is the same.
		u.log.Debug("password resealed meanwhile by another process", "client_id", row.ClientID)
	}
}

// recordIntent commits a new user's name and sealed password before MBanq
// hears of it. When another process got there first, its row is used.
func (u *userDirectory) recordIntent(ctx context.Context, clientID int64) (store.SelfServiceUser, error) {
	username := fmt.Sprintf("cardbridge-%d-%s", clientID, randomString(8, lowerAlnum))
	password := secret.New(newPassword())
	sealed, err := u.box.Seal(password, store.SealingContext(clientID, username))
	if err != nil {
		return store.SelfServiceUser{}, err
	}
	return u.store.RecordProvisioning(ctx, store.SelfServiceUser{ClientID: clientID, Username: username, PasswordSealed: sealed, SealingKey: u.box.KeyID()})
}

// provision creates the recorded user at MBanq and marks it active.
func (u *userDirectory) provision(ctx context.Context, row store.SelfServiceUser, password secret.String) error {
	roleID, err := u.selfServiceRole(ctx)
	if err != nil {
		return decision.AdminCall{Err: err}
	}
	// EnsureSelfServiceUser carries an Idempotency-Key fixed by the
	// username, and when MBanq reports the name taken (an earlier attempt
	// created the user but its answer, or MBanq's idempotency record, was
	// lost) it adopts that user, after checking it is the self-service user
	// of this client, and sets the password we hold.
	userID, err := u.admin.EnsureSelfServiceUser(ctx, mbanq.CreateUserRequest{
		Username:                     row.Username,
		Firstname:                    "cardbridge",
		Lastname:                     fmt.Sprintf("client %d", row.ClientID),
		OfficeID:                     u.cfg.OfficeID,
		Roles:                        []int64{roleID},
		Clients:                      []int64{row.ClientID},
		IsSelfServiceUser:            true,
		SendPasswordToEmail:          false,
		ResetPasswordAfterFirstLogin: false,
		PasswordNeverExpires:         true,
		Password:                     password,
	}, mbanq.IdempotencyKey("cardbridge", "self-service-user", row.Username))
	if err != nil {
		return decision.AdminCall{Err: fmt.Errorf("creating self-service user %s: %w", row.Username, err)}
	}
	if err := u.store.ActivateUser(ctx, row.ClientID, userID); err != nil {
		return err
	}
	u.cfg.observer().UserProvisioned(row.ClientID)
	u.log.Info("self-service user provisioned", "client_id", row.ClientID, "username", row.Username, "mbanq_user_id", userID)
	return nil
}

func (u *userDirectory) selfServiceRole(ctx context.Context) (int64, error) {
	u.mu.Lock()
	id := u.roleID
	u.mu.Unlock()
	if id != 0 {
		return id, nil
	}
	// One lookup for all the clients being provisioned at once: the roles
	// list can be long, and each answer is held while it is read.
	v, err, _ := u.flight.Do("self-service role", func() (any, error) { return u.admin.SelfServiceRoleID(ctx) })
	if err != nil {
		return 0, fmt.Errorf("discovering the self-service role: %w", err)
	}
	id = v.(int64)
	u.mu.Lock()
	u.roleID = id
	u.mu.Unlock()
	return id, nil
}

const (
	lowerAlnum    = "abcdefghijklmnopqrstuvwxyz0123456789"
	passwordChars = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!#%+-=_"
)

// newPassword returns a 32-character password from crypto/rand with at
// least one upper case letter, lower case letter, digit and symbol, which
// satisfies Fineract's password policies.
func newPassword() string {
	for {
		p := randomString(32, passwordChars)
		var upper, lower, digit, symbol bool
		for _, r := range p {
			switch {
			case r >= 'A' && r <= 'Z':
				upper = true
			case r >= 'a' && r <= 'z':
				lower = true
			case r >= '0' && r <= '9':
				digit = true
			default:
				symbol = true
			}
		}
		if upper && lower && digit && symbol {
			return p
		}
	}
}

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[randIndex(len(alphabet))]
	}
	return string(b)
}

// randIndex is uniform in [0, n) (rejection sampling, no modulo bias).
func randIndex(n int) int {
	limit := 256 - 256%n
	var buf [1]byte
	for {
		_, _ = rand.Read(buf[:])
		if int(buf[0]) < limit {
			return int(buf[0]) % n
		}
	}
}
