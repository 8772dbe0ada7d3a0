package app_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/observe"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// tokenTap records every token the sandbox hands out.
type tokenTap struct {
	mu     sync.Mutex
	tokens []string
}

func (tt *tokenTap) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth/token" {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		var body struct {
			Access  string `json:"access_token"`
			Refresh string `json:"refresh_token"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &body) == nil {
			tt.mu.Lock()
			for _, tok := range []string{body.Access, body.Refresh} {
				if tok != "" {
					tt.tokens = append(tt.tokens, tok)
				}
			}
			tt.mu.Unlock()
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = io.Copy(w, rec.Body)
	})
}

func TestNoSecretInLogsEventsErrorsOrDeadLetters(t *testing.T) {
	const (
		adminPassword = "Adm1n-pa55-7f3c9e"
		clientSecret  = "Cl1ent-s3cret-5a8d2b"
	)
	seed := sandbox.DefaultSeed()
	seed.Admin.Password = secret.New(adminPassword)
	seed.OAuthClient.Secret = secret.New(clientSecret)
	var logs testenv.LogBuffer
	taps := &tokenTap{}
	b := setupWith(t, options{
		seed: &seed,
		log:  observe.NewLogger(&logs, slog.LevelDebug, "json"),
		bank: taps.wrap,
	})
	ctx := context.Background()
	// A binding to an inactive card product: the bank refuses, which puts a
	// bank error into card.failed, the dead letters and the logs.
	require.NoError(t, b.store.AddBinding(ctx, store.Binding{Source: "urn:erp:globex", ClientID: 2, SavingsAccountID: 2, CardProductID: 2}))

	b.publish(t, request(erp, 1), event.Binary)
	b.outcomes(t, 1)
	// Expire every token so the next calls refresh them.
	b.sandbox.ExpireAllTokens()
	b.publish(t, request(erp, 1), event.Structured)
	b.publish(t, request("urn:erp:globex", 2), event.Binary)
	b.publish(t, request("urn:erp:nobody", 1), event.Binary)
	require.EqualValues(t, 4, b.settle(t))

	// Everything cardbridge wrote where people or other systems read it.
	var haystack strings.Builder
	haystack.WriteString(logs.String())
	for _, o := range b.outcomes(t, 4) {
		fmt.Fprintf(&haystack, "%+v\n", o)
	}
	dls, err := b.store.DeadLetters(ctx, store.DeadLetterFilter{IncludeReplayed: true})
	require.NoError(t, err)
	require.NotEmpty(t, dls)
	for _, d := range dls {
		fmt.Fprintf(&haystack, "%+v %s\n", d, d.Data)
	}
	var failed event.Failed
	for _, o := range b.outcomes(t, 4) {
		if f, ok := o.Data.(event.Failed); ok && f.Reason == event.ReasonBankRejected {
			failed = f
		}
	}
	require.NotEmpty(t, failed.BankErrorCode, "the bank's refusal reached card.failed")

	// The secrets: the admin password, the OAuth client secret, every token
	// the bank issued, each self-service password, and the key.
	secrets := map[string]string{"admin password": adminPassword, "client secret": clientSecret}
	taps.mu.Lock()
	require.NotEmpty(t, taps.tokens)
	for i, tok := range taps.tokens {
		secrets[fmt.Sprintf("token %d", i)] = tok
	}
	taps.mu.Unlock()
	users, err := b.store.SelfServiceUsers(ctx)
	require.NoError(t, err)
	require.Len(t, users, 2)
	box, err := secret.NewBox(b.cfg.SecretKey)
	require.NoError(t, err)
	for _, u := range users {
		p, err := box.Open(u.PasswordSealed, []byte(fmt.Sprintf("cardbridge/self-service-user/v1:%d:%s", u.ClientID, u.Username)))
		require.NoError(t, err)
		secrets["password of "+u.Username] = p.Reveal()
	}
	secrets["key (base64)"] = base64.StdEncoding.EncodeToString(b.cfg.SecretKey)
	secrets["key (raw)"] = string(b.cfg.SecretKey)

	text := haystack.String()
	require.Contains(t, text, "card issued", "the debug log was captured")
	for name, s := range secrets {
		require.NotContains(t, text, s, "%s leaked", name)
	}
}

// TestNATSPasswordNotInStartError: a process that cannot connect to NATS
// names the server, not its password, even when the URL does not parse
// (the parser's error quotes it whole).
func TestNATSPasswordNotInStartError(t *testing.T) {
	const password = "n4ts-pa55word-5e0a"
	natsURL := "nats://cardbridge:" + password + "@bad host:4222"
	cfg := testenv.Config(t, natsURL, "http://127.0.0.1:1", sandbox.DefaultSeed())
	var logs testenv.LogBuffer
	_, err := app.Start(context.Background(), cfg, observe.NewLogger(&logs, slog.LevelDebug, "json"))
	require.Error(t, err)
	require.Contains(t, err.Error(), "connecting to NATS at nats://cardbridge:xxxxx@bad host:4222")
	require.NotContains(t, err.Error()+logs.String(), password)
}
