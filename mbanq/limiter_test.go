package mbanq_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// The adaptive limiter against the real sandbox, over HTTP: a bank with a
// per-tenant rate limit, and more callers than it takes.

var testOrder = mbanq.OrderCardRequest{ProductID: 1, SavingsAccountID: 1, ClientID: 1}

// liveBank is the sandbox on a port of its own that can be stopped (calls
// are refused) and started again on the same port, and that counts the
// calls it receives by time.
type liveBank struct {
	t    *testing.T
	sb   *sandbox.Server
	addr string

	mu     sync.Mutex
	srv    *http.Server
	calls  []time.Time
	closed bool
}

func startLiveBank(t *testing.T, faults sandbox.Faults) *liveBank {
	t.Helper()
	b := &liveBank{t: t, sb: sandbox.New(testSeed(), sandbox.WithRandSeed(1), sandbox.WithFaults(faults))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	b.addr = ln.Addr().String()
	b.serve(ln)
	t.Cleanup(b.stop)
	return b
}

func (b *liveBank) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.calls = append(b.calls, time.Now())
		b.mu.Unlock()
		b.sb.ServeHTTP(w, r)
	})}
	b.mu.Lock()
	b.srv, b.closed = srv, false
	b.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// stop closes the listener and every connection: calls are refused.
func (b *liveBank) stop() {
	b.mu.Lock()
	srv := b.srv
	b.closed = true
	b.mu.Unlock()
	_ = srv.Close()
}

// restart listens on the same port again (retrying while the port is
// released).
func (b *liveBank) restart() time.Time {
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if ln, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("cannot listen on %s again: %v", b.addr, err)
		}
		<-time.After(10 * time.Millisecond)
	}
	at := time.Now()
	b.serve(ln)
	return at
}

// callsBetween counts the calls received in [from, to).
func (b *liveBank) callsBetween(from, to time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		if !c.Before(from) && c.Before(to) {
			n++
		}
	}
	return n
}

func (b *liveBank) client(t *testing.T, disableLimiter bool) *mbanq.Client {
	t.Helper()
	c, err := mbanq.New(mbanq.Config{
		BaseURL:        "http://" + b.addr,
		TenantID:       sandbox.DefaultTenantID,
		ClientID:       sandbox.DefaultOAuthClientID,
		ClientSecret:   secret.New(clientSecret),
		DisableLimiter: disableLimiter,
	})
	must(t, err)
	return c
}

// orderCards has workers order cards, each under its own key, until ctx
// ends; it returns the time of each card ordered.
func orderCards(ctx context.Context, s *mbanq.Session, workers int) []time.Time {
	var (
		mu    sync.Mutex
		cards []time.Time
		seq   atomic.Int64
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				key := fmt.Sprintf("limiter-test-%d", seq.Add(1))
				if _, err := s.OrderCard(ctx, testOrder, key); err == nil {
					mu.Lock()
					cards = append(cards, time.Now())
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return cards
}

func countBetween(ts []time.Time, from, to time.Time) int {
	n := 0
	for _, x := range ts {
		if !x.Before(from) && x.Before(to) {
			n++
		}
	}
	return n
}

// TestLimiterKeepsToTheBanksRateLimit: 256 callers against a bank that takes
// 100 calls a second. The goodput is measured after the first seconds (the
// bank's initial burst of a second's worth and the limiter's learning) and
// the refusals over the whole run. Not parallel: it measures calls per
// second, which the load of other tests would distort.
func TestLimiterKeepsToTheBanksRateLimit(t *testing.T) {
	const limit = 100.0
	for _, tc := range []struct {
		name    string
		disable bool
		run     time.Duration
	}{
		// Main's behaviour, every call retrying on its own: most calls are
		// refused. It shows the bank's limit bites in this test.
		{"without limiter", true, 6 * time.Second},
		{"with limiter", false, 25 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bank := startLiveBank(t, sandbox.Faults{TenantRateLimit: limit})
			c := bank.client(t, tc.disable)
			admin := c.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New(adminPassword)})
			ctx, cancel := context.WithTimeout(context.Background(), tc.run)
			defer cancel()
			begin := time.Now()
			// As many callers as a process has requests at the bank
			// (CARDBRIDGE_MAX_IN_FLIGHT's default).
			cards := orderCards(ctx, admin, 256)
			end := begin.Add(tc.run)
			st := bank.sb.Stats()
			refused := float64(st.TenantRateLimited) / float64(st.Requests)
			from := begin.Add(5 * time.Second)
			if tc.disable {
				from = begin.Add(2 * time.Second)
			}
			goodput := float64(countBetween(cards, from, end)) / end.Sub(from).Seconds()
			t.Logf("bank limit %.0f/s: %d cards in %s; goodput %.1f/s after %s (%.1f%% of the limit); %d of %d calls refused (%.1f%%)",
				limit, len(cards), tc.run, goodput, from.Sub(begin), 100*goodput/limit, st.TenantRateLimited, st.Requests, 100*refused)
			// Calls cut short at the end may have made a card unheard of.
			if st.CardsCreated < int64(len(cards)) || st.CardsCreated > int64(len(cards))+256 {
				t.Errorf("the bank made %d cards, the callers learnt of %d", st.CardsCreated, len(cards))
			}
			if tc.disable {
				// 72-74% on an idle machine; fewer when a loaded one
				// (-race, other tests) cannot make the calls as fast.
				// Four times the bound the limiter keeps is enough to
				// show the limit bites.
				if refused < 0.2 {
					t.Errorf("without the limiter only %.1f%% of calls were refused: the bank's limit did not bite", 100*refused)
				}
				return
			}
			if goodput < 0.95*limit {
				t.Errorf("goodput %.1f/s is under 95%% of the bank's limit (%.0f/s)", goodput, limit)
			}
			if refused > 0.05 {
				t.Errorf("%.1f%% of calls were refused, more than 5%%", 100*refused)
			}
		})
	}
}

// TestLimiterRampsUpWhenTheBankComesBack: the bank is stopped (calls are
// refused at connect) while 64 callers wait, then started again. Its first
// second back must not see the backlog at once, and the calls must ramp up.
// Not parallel, for the same reason.
func TestLimiterRampsUpWhenTheBankComesBack(t *testing.T) {
	bank := startLiveBank(t, sandbox.Faults{})
	c := bank.client(t, false)
	admin := c.As(mbanq.Credentials{Username: sandbox.DefaultAdminUsername, Password: secret.New(adminPassword)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []time.Time)
	go func() { done <- orderCards(ctx, admin, 64) }()
	defer func() { cancel(); <-done }()

	waitFor(t, 10*time.Second, "cards ordered before the outage", func() bool { return bank.sb.Stats().CardsCreated > 200 })
	bank.stop()
	// The outage lands: the callers' calls are refused, and the limiter
	// comes down to probing.
	waitFor(t, 30*time.Second, "the limiter to come down to its least rate", func() bool {
		s, _ := c.LimiterState()
		return s.Rate <= 1 && s.Limit == 1
	})
	waitFor(t, 30*time.Second, "the outage to be seen by the callers", func() bool {
		s, _ := c.LimiterState()
		return s.Waiting > 32
	})
	back := bank.restart()
	waitFor(t, 30*time.Second, "calls four seconds after the bank came back", func() bool {
		return bank.callsBetween(back.Add(4*time.Second), back.Add(time.Hour)) > 0
	})
	var perSecond []int
	for i := range 4 {
		from := back.Add(time.Duration(i) * time.Second)
		perSecond = append(perSecond, bank.callsBetween(from, from.Add(time.Second)))
	}
	t.Logf("calls per second after the bank came back: %v (64 callers waiting)", perSecond)
	if perSecond[0] > 16 {
		t.Errorf("the first second after the outage saw %d calls: the backlog of 64 callers was let through at once", perSecond[0])
	}
	if perSecond[3] < 4*max(perSecond[0], 1) {
		t.Errorf("calls did not ramp up: %v", perSecond)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond)
	}
}
