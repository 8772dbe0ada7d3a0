package mbanq_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

func withFaults(f sandbox.Faults) setupOpt {
	return setupOpt{sandbox: []sandbox.Option{sandbox.WithFaults(f)}}
}

func withConfig(change func(*mbanq.Config)) setupOpt { return setupOpt{config: change} }

func TestConcurrentCallersShareOneTokenFetch(t *testing.T) {
	t.Parallel()
	// Latency on the token endpoint makes the callers pile up behind the
	// first fetch; the assertion holds whatever the interleaving.
	b := setup(t, withFaults(sandbox.Faults{Latency: sandbox.Duration(20 * time.Millisecond), Paths: []string{"/oauth/token"}}))
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			_, err := b.admin.CardProducts(context.Background())
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	equal(t, b.sb.Stats().PasswordGrants, int64(1), "password grants")
	b.rememberToken(t, b.admin)
}

func TestAsReturnsTheSameSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	again := b.client.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New(adminPassword)})
	if again != b.admin {
		t.Fatal("As with the same credentials must share the session and its token")
	}
}

func TestRevokedTokenIsRenewedWithRefreshGrant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.admin.UserDetails(ctx)
	must(t, err)
	b.rememberToken(t, b.admin)

	b.sb.ExpireAccessTokens()
	_, err = b.admin.UserDetails(ctx)
	must(t, err)
	st := b.sb.Stats()
	equal(t, st.Unauthorized, int64(1), "the call was refused once")
	equal(t, st.RefreshGrants, int64(1), "refresh grants")
	equal(t, st.PasswordGrants, int64(1), "password grants")
	b.rememberToken(t, b.admin)
}

func TestRefreshFailureFallsBackToPasswordGrant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, err := b.admin.UserDetails(ctx)
	must(t, err)

	b.sb.ExpireAllTokens()
	_, err = b.admin.UserDetails(ctx)
	must(t, err)
	st := b.sb.Stats()
	equal(t, st.RefreshGrants, int64(1), "refresh grants")
	equal(t, st.PasswordGrants, int64(2), "password grants")
	equal(t, st.Unauthorized, int64(2), "call and refresh refused")
}

func TestUnauthorizedCallIsRetriedOnlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	ss, userID := b.selfService(t, "acme-cards", 1)
	_, err := ss.UserDetails(ctx)
	must(t, err)

	// Someone else resets the password and all tokens go: the session's
	// password is stale now.
	must(t, b.admin.ResetPassword(ctx, userID, secret.New("an0ther-Pw-5e6f")))
	b.sb.ExpireAllTokens()
	before := b.sb.Stats().Requests
	_, err = ss.UserDetails(ctx)
	wantError(t, err, http.StatusUnauthorized, mbanq.CodeNotAuthenticated)
	equal(t, mbanq.Classify(err), mbanq.ClassReauth, "class")
	// The call, the refresh grant, the password grant; no second call.
	equal(t, b.sb.Stats().Requests-before, int64(3), "requests")
	b.assertNoSecrets(t, err.Error(), "an0ther-Pw-5e6f")
}

func TestTokenIsRenewedShortlyBeforeExpiry(t *testing.T) {
	t.Parallel()
	clock := testenv.NewClockAt(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	b := setup(t, setupOpt{sandbox: []sandbox.Option{
		sandbox.WithClock(clock.Now),
		sandbox.WithFaults(sandbox.Faults{TokenLifetime: sandbox.Duration(100 * time.Second)}),
	}})
	mbanq.SetClock(b.client, clock.Now)
	ctx := context.Background()
	_, err := b.admin.UserDetails(ctx)
	must(t, err)
	old, err := b.admin.Token(ctx)
	must(t, err)

	clock.Advance(50 * time.Second)
	_, err = b.admin.UserDetails(ctx)
	must(t, err)
	equal(t, b.sb.Stats().RefreshGrants, int64(0), "still fresh at half its life")

	clock.Advance(45 * time.Second) // 95s: within the last tenth
	_, err = b.admin.UserDetails(ctx)
	must(t, err)
	st := b.sb.Stats()
	equal(t, st.RefreshGrants, int64(1), "renewed before expiry")
	equal(t, st.Unauthorized, int64(0), "never refused")

	// The sandbox really expires tokens.
	clock.Advance(10 * time.Second)
	resp, body := b.rawRequest(t, http.MethodGet, "/v1/userdetails", "", map[string]string{
		"tenantId": sandbox.DefaultTenantID, "Authorization": "Bearer " + old.Reveal(),
	})
	equal(t, resp.StatusCode, http.StatusUnauthorized, "expired token: "+body)
	equal(t, contains(body, "token expired"), true, "reason in "+body)
}

func TestServerErrorsAreRetried(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{ServerErrorNext: 2, Paths: []string{"/v1/cards"}}))
	card, err := b.admin.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "k")
	must(t, err)
	equal(t, card.ClientID, int64(1), "client")
	equal(t, b.sb.Stats().InjectedServerErrors, int64(2), "injected")
	equal(t, b.sb.CardCount(1), 1, "cards")
	equal(t, contains(b.logs.String(), "retrying"), true, "retries logged")
}

func TestRetriesStopAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{ServerErrorRate: 1, ServerErrorStatus: 503, Paths: []string{"/v1/cardproducts"}}))
	_, err := b.admin.CardProducts(context.Background())
	wantError(t, err, http.StatusServiceUnavailable, "")
	equal(t, mbanq.Classify(err), mbanq.ClassRetry, "class")
	equal(t, b.sb.Stats().InjectedServerErrors, int64(mbanq.DefaultMaxAttempts), "attempts")
}

func TestRateLimitHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{RateLimitNext: 1, RetryAfter: sandbox.Duration(time.Second), Paths: []string{"/v1/cardproducts"}}))
	_, err := b.admin.CardProducts(context.Background())
	must(t, err)
	equal(t, b.sb.Stats().InjectedRateLimits, int64(1), "rate limited")
	equal(t, contains(b.logs.String(), "wait=1s"), true, "waited as told: "+b.logs.String())
}

func TestLongRetryAfterIsLeftToTheCaller(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{RateLimitRate: 1, RetryAfter: sandbox.Duration(time.Hour), Paths: []string{"/v1/cardproducts"}}))
	_, err := b.admin.CardProducts(context.Background())
	wantError(t, err, http.StatusTooManyRequests, "error.msg.rate.limit.exceeded")
	equal(t, mbanq.Classify(err), mbanq.ClassRetry, "class")
	equal(t, mbanq.RetryAfter(err), time.Hour, "RetryAfter")
	equal(t, b.sb.Stats().InjectedRateLimits, int64(1), "not retried inside the call")
}

// notifyHandler signals each log record with a given message.
type notifyHandler struct {
	slog.Handler
	msg string
	ch  chan struct{}
}

func (h notifyHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return h.Handler.Handle(ctx, r)
}

func TestCancelStopsWaitingForRetry(t *testing.T) {
	t.Parallel()
	retrying := make(chan struct{}, 1)
	b := setup(t,
		withFaults(sandbox.Faults{ServerErrorRate: 1, Paths: []string{"/v1/cardproducts"}}),
		withConfig(func(c *mbanq.Config) {
			c.BaseBackoff, c.MaxBackoff = time.Hour, time.Hour
			c.Logger = slog.New(notifyHandler{Handler: c.Logger.Handler(), msg: "mbanq call failed, retrying", ch: retrying})
		}),
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.admin.CardProducts(ctx)
		done <- err
	}()
	<-retrying // the call is now waiting an hour
	cancel()
	err := <-done
	equal(t, errors.Is(err, context.Canceled), true, "canceled: "+errString(err))
	equal(t, mbanq.Classify(err), mbanq.ClassCanceled, "class")
	equal(t, b.sb.Stats().InjectedServerErrors, int64(1), "one attempt")
}

func TestCanceledContextIsNotPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.admin.OrderCard(ctx, mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "k")
	equal(t, mbanq.Classify(err), mbanq.ClassCanceled, "class of "+errString(err))

	ctx, cancel = context.WithTimeout(context.Background(), 0)
	defer cancel()
	_, err = b.admin.CardProducts(ctx)
	equal(t, mbanq.Classify(err), mbanq.ClassCanceled, "deadline: "+errString(err))
}

func TestAttemptTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	b := setup(t,
		withFaults(sandbox.Faults{Latency: sandbox.Duration(time.Second), Paths: []string{"/v1/cardproducts"}}),
		withConfig(func(c *mbanq.Config) { c.RequestTimeout = 20 * time.Millisecond; c.MaxAttempts = 2 }),
	)
	_, err := b.admin.CardProducts(context.Background())
	if err == nil {
		t.Fatal("want a timeout")
	}
	equal(t, mbanq.Classify(err), mbanq.ClassUnknown, "class of "+err.Error())
	equal(t, errors.Is(err, context.DeadlineExceeded), false, "not the caller's deadline")
	equal(t, contains(b.logs.String(), "attempt timed out"), true, "retried")
}

// A bank that cannot be reached at all received nothing: that is a fault
// of the deployment (ClassConfig, bank_unreachable), retried within the
// call in case it is a blip.
func TestNoAnswerIsRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	url := b.srv.URL
	b.srv.Close()
	c := clientFor(t, url, func(cfg *mbanq.Config) { cfg.MaxAttempts = 2 })
	_, err := c.As(mbanq.Credentials{Username: "u", Password: secret.New(userPassword)}).CardProducts(context.Background())
	var e *mbanq.Error
	equal(t, errors.As(err, &e), true, "an *Error")
	equal(t, e.HTTPStatus, 0, "no status")
	equal(t, mbanq.Classify(err), mbanq.ClassConfig, "class of "+errString(err))
	equal(t, mbanq.ConfigFault(err), mbanq.FaultUnreachable, "named")
}

func TestLostResponseThenRetryCreatesOneCard(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{LostResponseNext: 1, Paths: []string{"/v1/cards"}}))
	card, err := b.admin.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, mbanq.IdempotencyKey("card", "lost"))
	must(t, err)
	cards := b.sb.Cards()
	equal(t, len(cards), 1, "cards at the bank")
	equal(t, card.ID, cards[0].ID, "the created card is the one returned")
	equal(t, card.CardToken, cards[0].CardToken, "token")
	st := b.sb.Stats()
	equal(t, st.LostResponses, int64(1), "lost")
	equal(t, st.IdempotentReplays, int64(1), "answered from cache")
}

func TestManyLostResponsesNeverDuplicateCards(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{LostResponseRate: 0.5, ServerErrorRate: 0.1, Paths: []string{"/v1/cards"}}),
		withConfig(func(c *mbanq.Config) { c.MaxAttempts = 10 }))
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		key := mbanq.IdempotencyKey("card", string(rune('a'+i)))
		for range 2 { // each request is also delivered twice
			wg.Go(func() {
				_, err := b.admin.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, key)
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	equal(t, b.sb.CardCount(1), n, "one card per key")
	if b.sb.Stats().LostResponses == 0 {
		t.Error("no response was lost; the test proves nothing")
	}
}

func TestIdempotencyKeyReusedWithOtherBody(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	first, err := b.admin.OrderCard(ctx, mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "same-key")
	must(t, err)
	again, err := b.admin.OrderCard(ctx, mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "same-key")
	must(t, err)
	equal(t, again.ID, first.ID, "replayed card")
	equal(t, b.sb.CardCount(1), 1, "cards")

	_, err = b.admin.OrderCard(ctx, mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 2, ClientID: 2}, "same-key")
	wantError(t, err, sandbox.StatusIdempotencyConflict, mbanq.CodeIdempotencyKeyReused)
	// Not a refusal of the order: whatever was done under the key stands,
	// and taking it for one could lead to ordering under a new key.
	equal(t, mbanq.Classify(err), mbanq.ClassUnknown, "class")
}

func TestIdempotentReplayOverHTTP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	h := authHeaders(t, b.admin)
	h["Idempotency-Key"] = "raw-key"
	body := `{"productId":1,"savingsAccountId":1,"clientId":1}`
	r1, b1 := b.rawRequest(t, http.MethodPost, "/v1/cards", body, h)
	r2, b2 := b.rawRequest(t, http.MethodPost, "/v1/cards", body, h)
	equal(t, r1.StatusCode, http.StatusOK, "first")
	equal(t, r2.StatusCode, http.StatusOK, "replay")
	equal(t, r1.Header.Get("x-served-from-cache"), "", "first not from cache")
	equal(t, r2.Header.Get("x-served-from-cache"), "true", "replay from cache")
	equal(t, b2, b1, "same body")
	if r1.Header.Get("x-request-id") == r2.Header.Get("x-request-id") {
		t.Error("each answer has its own x-request-id")
	}
	// Errors are replayed too: the key stands for the outcome.
	h["Idempotency-Key"] = "raw-key-2"
	bad := `{"productId":2,"savingsAccountId":1,"clientId":1}`
	r3, _ := b.rawRequest(t, http.MethodPost, "/v1/cards", bad, h)
	r4, _ := b.rawRequest(t, http.MethodPost, "/v1/cards", bad, h)
	equal(t, r3.StatusCode, http.StatusForbidden, "refused")
	equal(t, r4.StatusCode, http.StatusForbidden, "refused again")
	equal(t, r4.Header.Get("x-served-from-cache"), "true", "refusal from cache")
	equal(t, b.sb.CardCount(1), 1, "cards")
}

func TestCreateUserIsIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	req := selfServiceUser("acme-cards", sandbox.DefaultSelfServiceRoleID, 1)
	r1, err := b.admin.CreateUser(ctx, req, "user-key")
	must(t, err)
	r2, err := b.admin.CreateUser(ctx, req, "user-key")
	must(t, err)
	equal(t, r2.UserID, r1.UserID, "same user")
	equal(t, r1.ClientID, int64(1), "client id")
	equal(t, len(b.sb.Users()), 2, "users")
}

// A 200 whose body does not name the card (empty object, cut in half,
// empty) is retried within the call under the same Idempotency-Key; the
// bank answers the retry from its cache with the real card, and no second
// card is made.
func TestGarbledAnswerIsAskedAgainAndNamesTheRealCard(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{GarbledResponseNext: 3, Paths: []string{"/v1/cards"}}),
		withConfig(func(c *mbanq.Config) { c.BaseBackoff = time.Millisecond; c.MaxBackoff = time.Millisecond }))
	for i := range 3 {
		key := mbanq.IdempotencyKey("card", "garbled", string(rune('a'+i)))
		card, err := b.admin.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, key)
		must(t, err)
		if card.ID == 0 || card.CardToken == "" {
			t.Fatalf("order %d: a card without id or token: %+v", i, card)
		}
		cards := b.sb.Cards()
		equal(t, len(cards), i+1, "one card per order")
		equal(t, card.ID, cards[i].ID, "the real card")
		equal(t, card.CardToken, cards[i].CardToken, "the real token")
	}
	st := b.sb.Stats()
	equal(t, st.GarbledResponses, int64(3), "three garbled answers: {}, cut, empty")
	equal(t, st.IdempotentReplays, int64(3), "each retry answered from the cache")
}

// A garbled answer that stays garbled is ClassUnknown: the card may exist.
func TestAnswerThatStaysGarbledIsUnknown(t *testing.T) {
	t.Parallel()
	b := setup(t, withFaults(sandbox.Faults{GarbledResponseRate: 1, Paths: []string{"/v1/cards"}}),
		withConfig(func(c *mbanq.Config) { c.MaxAttempts = 1 }))
	_, err := b.admin.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "k")
	equal(t, mbanq.Classify(err), mbanq.ClassUnknown, "class of "+errString(err))
	equal(t, b.sb.CardCount(1), 1, "the card exists at the bank")
}

// A redirect is never followed: it would take the bearer token (and, on
// /oauth/token, the client secret and a password) to wherever it points,
// and turn a POST into a GET. It is a fault of the configuration.
func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	t.Cleanup(other.Close)
	for _, status := range []int{http.StatusFound, http.StatusTemporaryRedirect} {
		redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.Path, status)
		}))
		t.Cleanup(redirecting.Close)
		c := clientFor(t, redirecting.URL)
		_, err := c.As(mbanq.Credentials{Username: "u", Password: secret.New(userPassword)}).OrderCard(context.Background(),
			mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "k")
		var e *mbanq.Error
		equal(t, errors.As(err, &e), true, "an *Error")
		equal(t, e.HTTPStatus, status, "the redirect's status is named")
		equal(t, mbanq.Classify(err), mbanq.ClassConfig, "class")
		equal(t, mbanq.ConfigFault(err), mbanq.FaultRedirect, "fault")
	}
	equal(t, elsewhere.Load(), int64(0), "nothing reached the redirect's target")
}

// An order whose attempt times out goes on at the bank (the sandbox, as a
// real bank, finishes work whose client hung up). The retry under the same
// key meets 425 while it is still being processed, and then the card from
// the bank's cache: one card, learnt by the call.
func TestOrderWhoseAttemptTimedOutLearnsItsCardAfter425(t *testing.T) {
	t.Parallel()
	b := setup(t,
		withFaults(sandbox.Faults{Latency: sandbox.Duration(time.Second), Paths: []string{"/v1/cards"}}),
		withConfig(func(c *mbanq.Config) { c.RequestTimeout = 200 * time.Millisecond; c.MaxAttempts = 6 }),
	)
	card, err := b.admin.OrderCard(context.Background(), mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}, "timed-out-order")
	must(t, err)
	equal(t, b.sb.CardCount(1), 1, "one card")
	equal(t, card.CardToken, b.sb.Cards()[0].CardToken, "the card the bank made")
	st := b.sb.Stats()
	equal(t, st.TooEarly > 0, true, "a retry met the order still in progress (425)")
	equal(t, contains(b.logs.String(), "attempt timed out"), true, "the first attempt timed out")
}

// A 425 is no refusal: the first request under the key may yet make the
// card. The call ends with an unknown outcome, to be asked again under
// the same key, never a rejection.
func TestTooEarlyIsAnUnknownOutcome(t *testing.T) {
	t.Parallel()
	b := setup(t,
		withFaults(sandbox.Faults{Latency: sandbox.Duration(2 * time.Second), Paths: []string{"/v1/cards"}}),
		withConfig(func(c *mbanq.Config) { c.MaxAttempts = 1 }),
	)
	order := mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}
	first := make(chan error, 1)
	go func() {
		_, err := b.admin.OrderCard(context.Background(), order, "in-progress")
		first <- err
	}()
	waitFor(t, 10*time.Second, "the first order at work", func() bool { return b.sb.Stats().KeysInProgress == 1 })
	_, err := b.admin.OrderCard(context.Background(), order, "in-progress")
	var e *mbanq.Error
	equal(t, errors.As(err, &e) && e.HTTPStatus == http.StatusTooEarly, true, "425: "+errString(err))
	equal(t, mbanq.Classify(err), mbanq.ClassUnknown, "class")
	equal(t, mbanq.OutcomeUnknown(err), true, "outcome unknown")
	equal(t, mbanq.RetryAfter(err), time.Second, "Retry-After")
	must(t, <-first)
	equal(t, b.sb.CardCount(1), 1, "one card")
}
