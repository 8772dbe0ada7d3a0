package mbanq_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// These tests run the real client against the sandbox over HTTP: each
// endpoint's success and its documented errors.

func TestUserDetailsOfAdmin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	d, err := b.admin.UserDetails(context.Background())
	must(t, err)
	equal(t, d.Username, sandbox.DefaultAdminUsername, "username")
	equal(t, d.UserID, int64(1), "user id")
	equal(t, d.OfficeID, int64(1), "office")
	equal(t, d.IsSelfServiceUser, false, "self-service")
	equal(t, slices.Contains(d.Permissions, sandbox.PermissionAll), true, "ALL_FUNCTIONS")
	equal(t, d.Roles[0].Name, "Super user", "role")
	b.rememberToken(t, b.admin)
}

func TestRolesAndSelfServiceRoleDiscovery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	roles, err := b.admin.Roles(context.Background())
	must(t, err)
	equal(t, len(roles), 5, "roles")
	id, err := b.admin.SelfServiceRoleID(context.Background())
	must(t, err)
	equal(t, id, int64(sandbox.DefaultSelfServiceRoleID), "self-service role")
}

func TestSelfServiceRoleDiscoveryByName(t *testing.T) {
	t.Parallel()
	seed := testSeed()
	for i := range seed.Roles {
		seed.Roles[i].IsSelfService = false // only the name is left to go by
	}
	seed.Roles = append(seed.Roles, sandbox.Role{ID: 9, Name: "self-service user (old)", Disabled: true})
	srv := newServerFor(t, seed)
	c := clientFor(t, srv.URL)
	admin := c.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New(adminPassword)})
	id, err := admin.SelfServiceRoleID(context.Background())
	must(t, err)
	equal(t, id, int64(sandbox.DefaultSelfServiceRoleID), "role found by name")
}

func TestSelfServiceUserOrdersVirtualCard(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ss, userID := b.selfService(t, "acme-cards", 1)

	d, err := ss.UserDetails(ctx)
	must(t, err)
	equal(t, d.UserID, userID, "user id")
	equal(t, d.IsSelfServiceUser, true, "self-service")
	equal(t, d.Clients, []int64{1}, "clients")

	client, err := ss.GetClient(ctx, 1)
	must(t, err)
	equal(t, client.DisplayName, "Acme Corporation", "client name")
	equal(t, client.Active, true, "client active")
	equal(t, client.LegalForm, mbanq.LegalFormEntity, "legal form")

	products, err := ss.CardProducts(ctx)
	must(t, err)
	equal(t, len(products), 3, "products")
	p, err := ss.CardProduct(ctx, 1)
	must(t, err)
	equal(t, p, mbanq.CardProduct{ID: 1, Name: "Virtual Debit Card", Active: true, CardType: "DEBIT", Virtual: true, Network: "VISA", CurrencyCode: "USD"}, "product 1")

	card, err := ss.OrderCard(ctx, mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, mbanq.IdempotencyKey("card", "e1"))
	must(t, err)
	equal(t, card.ClientID, int64(1), "card client")
	equal(t, card.ResourceID, card.ID, "resource id")
	equal(t, card.CardToken != "", true, "card token")
	equal(t, card.ResourceIdentifier, card.CardToken, "resource identifier")

	got, err := ss.GetCard(ctx, card.ID)
	must(t, err)
	equal(t, got.Status, mbanq.CardStatusActive, "status")
	equal(t, got.Virtual, true, "virtual")
	equal(t, got.SavingsAccountID, int64(1), "savings account")
	equal(t, got.CardToken, card.CardToken, "token")
	equal(t, b.sb.CardCount(1), 1, "cards of client 1")

	u, err := b.admin.GetUser(ctx, userID)
	must(t, err)
	equal(t, u.Username, "acme-cards", "username")
	equal(t, u.IsSelfServiceUser, true, "self-service")
	equal(t, u.Clients, []int64{1}, "user clients")
	equal(t, u.Roles[0].ID, int64(sandbox.DefaultSelfServiceRoleID), "user role")

	users, err := b.admin.ListUsers(ctx)
	must(t, err)
	equal(t, len(users), 2, "users")
	b.rememberToken(t, ss)
}

func TestAdminMayOrderForAnyClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	card, err := b.admin.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 2, ClientID: 2}, "k-admin")
	must(t, err)
	equal(t, card.ClientID, int64(2), "client")
}

func TestSelfServiceScope(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ss, _ := b.selfService(t, "acme-cards", 1)

	_, err := ss.GetClient(ctx, 2)
	wantError(t, err, http.StatusNotFound, "error.msg.client.id.invalid")
	equal(t, mbanq.Classify(err), mbanq.ClassPermanent, "class")
	equal(t, mbanq.IsNotFound(err), true, "IsNotFound")

	_, err = ss.OrderCard(ctx, mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 2, ClientID: 2}, "k1")
	wantError(t, err, http.StatusNotFound, "error.msg.client.id.invalid")

	other, err := b.admin.OrderCard(ctx, mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 2, ClientID: 2}, "k2")
	must(t, err)
	_, err = ss.GetCard(ctx, other.ID)
	wantError(t, err, http.StatusNotFound, "error.msg.card.id.invalid")

	// Admin-only operations.
	_, err = ss.Roles(ctx)
	wantError(t, err, http.StatusForbidden, mbanq.CodeNotAuthorized)
	_, err = ss.ListUsers(ctx)
	wantError(t, err, http.StatusForbidden, mbanq.CodeNotAuthorized)
	_, err = ss.GetUser(ctx, 1)
	wantError(t, err, http.StatusForbidden, mbanq.CodeNotAuthorized)
	_, err = ss.CreateUser(ctx, selfServiceUser("x", 5, 1), "k3")
	wantError(t, err, http.StatusForbidden, mbanq.CodeNotAuthorized)
	err = ss.UpdateUser(ctx, 1, mbanq.UpdateUserRequest{Password: secret.New(userPassword)})
	wantError(t, err, http.StatusForbidden, mbanq.CodeNotAuthorized)
	equal(t, mbanq.Classify(err), mbanq.ClassConfig, "a missing permission is a fault of the deployment")
	equal(t, mbanq.ConfigFault(err), mbanq.FaultNotAuthorized, "named")
}

func TestOrderCardErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		req    mbanq.OrderCardRequest
		status int
		code   string
	}{
		{"inactive product", mbanq.OrderCardRequest{ProductID: 2, SavingsAccountID: 1, ClientID: 1}, 403, "error.msg.cardproduct.not.active"},
		{"unknown product", mbanq.OrderCardRequest{ProductID: 99, SavingsAccountID: 1, ClientID: 1}, 404, "error.msg.cardproduct.id.invalid"},
		{"no product", mbanq.OrderCardRequest{SavingsAccountID: 1, ClientID: 1}, 400, "validation.msg.card.productId.cannot.be.blank"},
		{"no client", mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1}, 400, "validation.msg.card.clientId.cannot.be.blank"},
		{"account of another client", mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 2, ClientID: 1}, 403, "error.msg.card.savings.account.not.of.client"},
		{"unknown account", mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 99, ClientID: 1}, 404, "error.msg.saving.account.id.invalid"},
		{"unknown client", mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 99}, 404, "error.msg.client.id.invalid"},
		{"inactive client", mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 3, ClientID: 3}, 403, "error.msg.client.not.active"},
		{"unknown user", mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1, UserID: 99}, 404, "error.msg.user.id.invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.admin.OrderCard(ctx, tt.req, mbanq.IdempotencyKey(tt.name))
			wantError(t, err, tt.status, tt.code)
			equal(t, mbanq.Classify(err), mbanq.ClassPermanent, "class")
		})
	}
	_, err := b.admin.GetCard(ctx, 12345)
	wantError(t, err, http.StatusNotFound, "error.msg.card.id.invalid")
	_, err = b.admin.CardProduct(ctx, 12345)
	wantError(t, err, http.StatusNotFound, "error.msg.cardproduct.id.invalid")
	equal(t, b.sb.Stats().CardsCreated, int64(0), "cards created")
}

func TestCreateUserValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	long := strings.Repeat("x", 101)
	valid := func() mbanq.CreateUserRequest { return selfServiceUser("valid-user", 5, 1) }
	tests := []struct {
		name   string
		change func(*mbanq.CreateUserRequest)
		status int
		code   string
	}{
		{"blank firstname", func(r *mbanq.CreateUserRequest) { r.Firstname = "  " }, 400, "validation.msg.user.firstname.cannot.be.blank"},
		{"long lastname", func(r *mbanq.CreateUserRequest) { r.Lastname = long }, 400, "validation.msg.user.lastname.exceeds.max.length"},
		{"no username", func(r *mbanq.CreateUserRequest) { r.Username = "" }, 400, "validation.msg.user.username.cannot.be.blank"},
		{"office 0", func(r *mbanq.CreateUserRequest) { r.OfficeID = 0 }, 400, "validation.msg.user.officeId.not.greater.than.zero"},
		{"no roles", func(r *mbanq.CreateUserRequest) { r.Roles = nil }, 400, "validation.msg.user.roles.cannot.be.empty"},
		{"no password", func(r *mbanq.CreateUserRequest) { r.Password = secret.String{} }, 400, "validation.msg.user.password.cannot.be.blank"},
		{"clients without self-service", func(r *mbanq.CreateUserRequest) { r.IsSelfServiceUser = false }, 400, "validation.msg.user.clients.not.supported.when.isSelfServiceUser.is.false"},
		{"mailed password needs email", func(r *mbanq.CreateUserRequest) { r.SendPasswordToEmail = true; r.Email = "" }, 400, "validation.msg.user.email.cannot.be.blank"},
		{"unknown office", func(r *mbanq.CreateUserRequest) { r.OfficeID = 99 }, 404, "error.msg.office.id.invalid"},
		{"unknown role", func(r *mbanq.CreateUserRequest) { r.Roles = []int64{99} }, 404, "error.msg.role.id.invalid"},
		{"unknown client", func(r *mbanq.CreateUserRequest) { r.Clients = []int64{99} }, 404, "error.msg.client.id.invalid"},
		{"self-service role for system user", func(r *mbanq.CreateUserRequest) { r.IsSelfServiceUser = false; r.Clients = nil }, 403, "error.msg.user.role.self.service.only"},
		{"duplicate username", func(r *mbanq.CreateUserRequest) { r.Username = sandbox.DefaultAdminUsername }, 403, mbanq.CodeDuplicateUsername},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := valid()
			tt.change(&req)
			_, err := b.admin.CreateUser(ctx, req, mbanq.IdempotencyKey(tt.name))
			e := wantError(t, err, tt.status, tt.code)
			equal(t, mbanq.Classify(err), mbanq.ClassPermanent, "class")
			b.assertNoSecrets(t, err.Error(), e.DeveloperMessage)
		})
	}
	_, err := b.admin.CreateUser(ctx, func() mbanq.CreateUserRequest { r := valid(); r.Username = "mifos"; return r }(), "dup")
	equal(t, mbanq.IsDuplicateUsername(err), true, "IsDuplicateUsername")
	equal(t, len(b.sb.Users()), 1, "no user created")
}

func TestCreateUserRawValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := authHeaders(t, b.admin)
	tests := []struct {
		name, body string
		status     int
		code       string
	}{
		{"unknown field", `{"username":"u","firstname":"a","lastname":"b","officeId":1,"roles":["5"],"isSelfServiceUser":true,"clients":[1],"sendPasswordToEmail":false,"password":"p","repeatPassword":"p","nickname":"x"}`, 400, "error.msg.parameter.unsupported"},
		{"passwords differ", `{"username":"u","firstname":"a","lastname":"b","officeId":1,"roles":["5"],"isSelfServiceUser":true,"clients":[1],"sendPasswordToEmail":false,"password":"` + userPassword + `","repeatPassword":"other"}`, 400, "validation.msg.user.password.not.equal.to.repeatPassword"},
		{"no repeat", `{"username":"u","firstname":"a","lastname":"b","officeId":1,"roles":[5],"isSelfServiceUser":true,"clients":[1],"sendPasswordToEmail":false,"password":"p"}`, 400, "validation.msg.user.repeatPassword.cannot.be.blank"},
		{"not JSON", `username=u`, 400, "validation.msg.invalid.json"},
		{"office as text", `{"username":"u","firstname":"a","lastname":"b","officeId":"one","roles":[5],"sendPasswordToEmail":false,"password":"p","repeatPassword":"p"}`, 400, "validation.msg.user.officeId.not.a.number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := b.rawRequest(t, http.MethodPost, "/v1/users", tt.body, h)
			equal(t, resp.StatusCode, tt.status, "status "+body)
			if !contains(body, `"`+tt.code+`"`) || !contains(body, `"httpStatusCode":"400"`) {
				t.Errorf("body %s lacks code %s", body, tt.code)
			}
			if contains(body, userPassword) {
				t.Errorf("password echoed: %s", body)
			}
		})
	}
}

func TestUpdateUserAndDuplicateRecovery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ss, userID := b.selfService(t, "acme-cards", 1)
	_, err := ss.UserDetails(ctx)
	must(t, err)

	// Lose the password, as a crash between creation and storing it would.
	newPw := secret.New("n3w-Pw-99a1")
	b.mu.Lock()
	b.secrets = append(b.secrets, newPw.Reveal())
	b.mu.Unlock()
	req := selfServiceUser("acme-cards", sandbox.DefaultSelfServiceRoleID, 1)
	req.Password = newPw
	id, err := b.admin.EnsureSelfServiceUser(ctx, req, mbanq.IdempotencyKey("another attempt"))
	must(t, err)
	equal(t, id, userID, "recovered user id")

	fresh := b.client.As(mbanq.Credentials{Username: "acme-cards", Password: newPw})
	if fresh == ss {
		t.Fatal("a new password must give a new session")
	}
	_, err = fresh.UserDetails(ctx)
	must(t, err)

	// The old password no longer works once its token is gone.
	b.sb.ExpireAllTokens()
	_, err = ss.UserDetails(ctx)
	wantError(t, err, http.StatusUnauthorized, mbanq.CodeNotAuthenticated)
	equal(t, mbanq.Classify(err), mbanq.ClassReauth, "class")
	b.assertNoSecrets(t, err.Error())

	// Recovery refuses a user that is not the expected self-service user.
	_, err = b.admin.RecoverSelfServiceUser(ctx, selfServiceUser(sandbox.DefaultAdminUsername, 5, 1))
	equal(t, isErr(err, mbanq.ErrUserMismatch), true, "mismatch: "+errString(err))
	_, err = b.admin.RecoverSelfServiceUser(ctx, selfServiceUser("acme-cards", 5, 2))
	equal(t, isErr(err, mbanq.ErrUserMismatch), true, "other client: "+errString(err))
	_, err = b.admin.FindUserByUsername(ctx, "nobody")
	equal(t, isErr(err, mbanq.ErrUserNotFound), true, "not found")

	// Nor one that may also act for a client it was not made for: taking
	// it over would hand that client's cards to the caller.
	role, err := b.admin.SelfServiceRoleID(ctx)
	must(t, err)
	_, sharedID := b.selfService(t, "shared-cards", 1, 2)
	_, err = b.admin.RecoverSelfServiceUser(ctx, selfServiceUser("shared-cards", role, 1))
	equal(t, isErr(err, mbanq.ErrUserMismatch), true, "extra client: "+errString(err))
	id, err = b.admin.RecoverSelfServiceUser(ctx, selfServiceUser("shared-cards", role, 2, 1))
	must(t, err)
	equal(t, id, sharedID, "exactly its clients, in any order")

	err = b.admin.UpdateUser(ctx, userID, mbanq.UpdateUserRequest{Firstname: "Renamed"})
	must(t, err)
	u, err := b.admin.GetUser(ctx, userID)
	must(t, err)
	equal(t, u.Firstname, "Renamed", "firstname")
	err = b.admin.UpdateUser(ctx, 999, mbanq.UpdateUserRequest{Firstname: "x"})
	wantError(t, err, http.StatusNotFound, "error.msg.user.id.invalid")
	_, err = b.admin.GetUser(ctx, 999)
	wantError(t, err, http.StatusNotFound, "error.msg.user.id.invalid")
}

func TestTenantIsRequired(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := clientFor(t, b.srv.URL, func(cfg *mbanq.Config) { cfg.TenantID = "other" })
	s := c.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New(adminPassword)})
	_, err := s.UserDetails(context.Background())
	wantError(t, err, http.StatusUnauthorized, mbanq.CodeInvalidTenant)
	equal(t, mbanq.Classify(err), mbanq.ClassConfig, "a wrong tenant is not fixed by a new token")
	equal(t, mbanq.ConfigFault(err), mbanq.FaultInvalidTenant, "named")

	resp, body := b.rawRequest(t, http.MethodGet, "/v1/cardproducts", "", nil)
	equal(t, resp.StatusCode, http.StatusUnauthorized, "status")
	equal(t, contains(body, mbanq.CodeInvalidTenant), true, "code in "+body)
	equal(t, resp.Header.Get("x-request-id") != "", true, "x-request-id")
}

func TestBearerIsRequired(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, auth := range []string{"", "Bearer nonsense", "Bearer a.b.c"} {
		resp, body := b.rawRequest(t, http.MethodGet, "/v1/cardproducts", "", map[string]string{"tenantId": sandbox.DefaultTenantID, "Authorization": auth})
		equal(t, resp.StatusCode, http.StatusUnauthorized, "status for "+auth)
		equal(t, contains(body, `"userMessageGlobalisationCode":"error.msg.not.authenticated"`), true, "code in "+body)
	}
}

func TestBadCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	wrong := b.client.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New("wr0ng-Pw-x1")})
	_, err := wrong.UserDetails(ctx)
	wantError(t, err, http.StatusUnauthorized, mbanq.CodeNotAuthenticated)
	equal(t, mbanq.Classify(err), mbanq.ClassReauth, "class")
	b.assertNoSecrets(t, err.Error())
	if contains(err.Error(), "wr0ng-Pw-x1") {
		t.Errorf("password in error: %v", err)
	}

	// A wrong client secret is told apart from a wrong password: the
	// OAuth2 answer of Spring Security, read into Code and Message.
	c := clientFor(t, b.srv.URL, func(cfg *mbanq.Config) { cfg.ClientSecret = secret.New("n0t-the-secret") })
	_, err = c.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New(adminPassword)}).UserDetails(ctx)
	e := wantError(t, err, http.StatusUnauthorized, "invalid_client")
	equal(t, e.Message, "Bad client credentials", "message")
	if contains(err.Error(), "n0t-the-secret") {
		t.Errorf("client secret in error: %v", err)
	}
}

func TestTokenEndpointAcceptsJSON(t *testing.T) {
	t.Parallel()
	b := setup(t)
	body := `{"grant_type":"password","username":"mifos","password":"` + adminPassword + `","client_id":"cardbridge","client_secret":"` + clientSecret + `"}`
	resp, out := b.rawRequest(t, http.MethodPost, "/oauth/token", body, map[string]string{"tenantId": sandbox.DefaultTenantID, "Content-Type": "application/json"})
	equal(t, resp.StatusCode, http.StatusOK, "status "+out)
	for _, f := range []string{`"access_token"`, `"refresh_token"`, `"expires_in":3600`, `"scope":"all"`} {
		equal(t, contains(out, f), true, f+" in "+out)
	}
	resp, out = b.rawRequest(t, http.MethodPost, "/oauth/token", `{"grant_type":"client_credentials","client_id":"cardbridge","client_secret":"`+clientSecret+`"}`,
		map[string]string{"tenantId": sandbox.DefaultTenantID, "Content-Type": "application/json"})
	equal(t, resp.StatusCode, http.StatusBadRequest, "unsupported grant "+out)
}

func TestConfigValidationNamesFields(t *testing.T) {
	t.Parallel()
	_, err := mbanq.New(mbanq.Config{MaxAttempts: -1})
	if err == nil {
		t.Fatal("want error")
	}
	for _, f := range []string{"BaseURL", "TenantID", "ClientID", "ClientSecret", "MaxAttempts"} {
		equal(t, contains(err.Error(), f), true, f+" named in "+err.Error())
	}
}

// Plain http is refused to anything but the loopback unless allowed, and a
// base URL with credentials is refused without repeating them.
func TestBaseURLMustKeepSecretsOffTheWire(t *testing.T) {
	t.Parallel()
	cfg := func(base string, allow bool) mbanq.Config {
		return mbanq.Config{BaseURL: base, TenantID: "t", ClientID: "c", ClientSecret: secret.New("s"), AllowPlainHTTP: allow}
	}
	for _, ok := range []mbanq.Config{
		cfg("https://api.cloud.mbanq.com", false),
		cfg("http://127.0.0.1:8090", false),
		cfg("http://localhost:8090/", false),
		cfg("http://[::1]:8090", false),
		cfg("http://sandbox:8090", true),
	} {
		_, err := mbanq.New(ok)
		must(t, err)
	}
	_, err := mbanq.New(cfg("http://bank.example:8080", false))
	equal(t, err != nil && contains(err.Error(), "plain http"), true, "plain http refused: "+errString(err))
	_, err = mbanq.New(cfg("https://user:hunter2@bank.example", false))
	equal(t, err != nil && contains(err.Error(), "credentials"), true, "credentials refused: "+errString(err))
	equal(t, contains(errString(err), "hunter2"), false, "the password is not repeated")
}

// An answer past its cap fails the call, naming the cap, without reading
// the rest: the bank cannot make the process buffer megabytes.
func TestAnswerPastItsCapIsRefusedUnread(t *testing.T) {
	t.Parallel()
	var written atomic.Int64
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/oauth/token" {
			_, _ = io.WriteString(w, `{"access_token":"t","expires_in":3600}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		chunk := []byte(strings.Repeat(" ", 64<<10))
		for range 16 << 10 { // up to 1 GiB, unless the client hangs up
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	t.Cleanup(huge.Close)
	c := clientFor(t, huge.URL, func(cfg *mbanq.Config) { cfg.MaxAttempts = 1 })
	s := c.As(mbanq.Credentials{Username: "u", Password: secret.New(userPassword)})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Go(func() {
			_, err := s.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "k")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		var e *mbanq.Error
		equal(t, errors.As(err, &e), true, "an *Error: "+errString(err))
		equal(t, e.Code, mbanq.CodeAnswerTooLarge, "code")
		equal(t, contains(err.Error(), "larger than 65536 bytes"), true, "the cap is named: "+err.Error())
		equal(t, mbanq.Classify(err), mbanq.ClassUnknown, "an unread answer to a POST is unknown")
	}
	if w := written.Load(); w > 40*(8<<20) {
		t.Errorf("the server wrote %d bytes: the client kept reading past its cap", w)
	}
}
