package mbanq_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// Distinctive secrets, so that a leak is found by a plain substring search
// (the default seed's "password" would also match log words).
const (
	adminPassword = "adm1n-Pw-7f3c9a"
	clientSecret  = "cl1ent-Secret-51d2e8"
	userPassword  = "ss-User-Pw-a4b8c2"
)

// bundle is what most tests need: a sandbox served over HTTP, a client
// configured for it, an admin session and the captured log.
type bundle struct {
	sb     *sandbox.Server
	srv    *httptest.Server
	client *mbanq.Client
	admin  *mbanq.Session
	logs   *testenv.LogBuffer

	mu      sync.Mutex
	secrets []string
}

type setupOpt struct {
	sandbox []sandbox.Option
	config  func(*mbanq.Config)
}

func testSeed() sandbox.Seed {
	seed := sandbox.DefaultSeed()
	seed.Admin.Password = secret.New(adminPassword)
	seed.OAuthClient.Secret = secret.New(clientSecret)
	return seed
}

func setup(t *testing.T, opts ...setupOpt) *bundle {
	t.Helper()
	var sbOpts []sandbox.Option
	for _, o := range opts {
		sbOpts = append(sbOpts, o.sandbox...)
	}
	sbOpts = append([]sandbox.Option{sandbox.WithRandSeed(1)}, sbOpts...)
	b := &bundle{sb: sandbox.New(testSeed(), sbOpts...), logs: &testenv.LogBuffer{}}
	b.srv = httptest.NewServer(b.sb)
	t.Cleanup(b.srv.Close)

	cfg := mbanq.Config{
		BaseURL:      b.srv.URL,
		TenantID:     sandbox.DefaultTenantID,
		ClientID:     sandbox.DefaultOAuthClientID,
		ClientSecret: secret.New(clientSecret),
		Logger:       slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		BaseBackoff:  time.Millisecond,
		MaxBackoff:   4 * time.Millisecond,
	}
	for _, o := range opts {
		if o.config != nil {
			o.config(&cfg)
		}
	}
	c, err := mbanq.New(cfg)
	must(t, err)
	b.client = c
	b.admin = c.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New(adminPassword)})
	b.secrets = []string{adminPassword, clientSecret, userPassword}
	// Whatever a test did, nothing secret may have been logged.
	t.Cleanup(func() { b.assertNoSecrets(t) })
	return b
}

// rememberToken adds a session's current token to the secrets to look for.
func (b *bundle) rememberToken(t *testing.T, s *mbanq.Session) {
	t.Helper()
	tok, err := s.Token(context.Background())
	must(t, err)
	b.mu.Lock()
	b.secrets = append(b.secrets, tok.Reveal())
	b.mu.Unlock()
}

// assertNoSecrets fails if a secret appears in the log or in texts.
func (b *bundle) assertNoSecrets(t *testing.T, texts ...string) {
	t.Helper()
	b.mu.Lock()
	secrets := append([]string(nil), b.secrets...)
	b.mu.Unlock()
	all := append([]string{b.logs.String()}, texts...)
	for _, s := range secrets {
		for i, text := range all {
			if strings.Contains(text, s) {
				where := "log"
				if i > 0 {
					where = "text"
				}
				t.Errorf("secret %.6s... found in %s: %s", s, where, text)
			}
		}
	}
}

// selfService creates a self-service user for the clients and returns its
// session.
func (b *bundle) selfService(t *testing.T, username string, clients ...int64) (*mbanq.Session, int64) {
	t.Helper()
	ctx := context.Background()
	role, err := b.admin.SelfServiceRoleID(ctx)
	must(t, err)
	res, err := b.admin.CreateUser(ctx, selfServiceUser(username, role, clients...), mbanq.IdempotencyKey("create-user", username))
	must(t, err)
	return b.client.As(mbanq.Credentials{Username: username, Password: secret.New(userPassword)}), res.UserID
}

func selfServiceUser(username string, role int64, clients ...int64) mbanq.CreateUserRequest {
	return mbanq.CreateUserRequest{
		Username: username, Firstname: "Card", Lastname: "Bridge", Email: username + "@example.com",
		OfficeID: 1, Roles: []int64{role}, IsSelfServiceUser: true, Clients: clients,
		SendPasswordToEmail: false, Password: secret.New(userPassword),
	}
}

// rawRequest sends a request without the client, for what the client never
// sends (missing headers, unknown fields...).
func (b *bundle) rawRequest(t *testing.T, method, path, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
	must(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.srv.Client().Do(req)
	must(t, err)
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	return resp, buf.String()
}

// authHeaders returns the headers of an authenticated JSON call as user s.
func authHeaders(t *testing.T, s *mbanq.Session) map[string]string {
	t.Helper()
	tok, err := s.Token(context.Background())
	must(t, err)
	return map[string]string{
		"tenantId":      sandbox.DefaultTenantID,
		"Authorization": "Bearer " + tok.Reveal(),
		"Content-Type":  "application/json",
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func equal[T any](t *testing.T, got, want T, what string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %#v, want %#v", what, got, want)
	}
}

// wantError checks that err is an *mbanq.Error with the status and code.
func wantError(t *testing.T, err error, status int, code string) *mbanq.Error {
	t.Helper()
	var e *mbanq.Error
	if !errors.As(err, &e) {
		t.Fatalf("want *mbanq.Error %d %s, got %T %v", status, code, err, err)
	}
	if e.HTTPStatus != status || (code != "" && !mbanq.HasCode(err, code)) {
		t.Fatalf("want %d %s, got %v", status, code, err)
	}
	if e.RequestID == "" {
		t.Errorf("error without request id: %v", err)
	}
	return e
}
