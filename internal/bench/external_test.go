package bench_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/bench"
	"github.com/cardbridge/cardbridge/internal/cli"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/observe"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

const boundSource = "urn:erp:bench-external"

// deployment runs cardbridge in-process against an embedded NATS server,
// a sandbox and a schema of the test's own, with boundSource bound to
// client 1: an "existing deployment" for the bench to drive.
func deployment(t *testing.T) (natsURL string) {
	t.Helper()
	ns := testenv.NATS(t)
	seed := sandbox.DefaultSeed()
	bank := httptest.NewServer(sandbox.New(seed))
	t.Cleanup(bank.Close)
	cfg := config.Defaults()
	cfg.DatabaseURL = secret.New(testenv.DatabaseURL(t))
	cfg.NATSURL = ns.URL()
	cfg.MBanq = config.MBanq{
		BaseURL: bank.URL, TenantID: seed.TenantID,
		ClientID: seed.OAuthClient.ID, ClientSecret: seed.OAuthClient.Secret,
		AdminUsername: seed.Admin.Username, AdminPassword: seed.Admin.Password,
		OfficeID: 1,
	}
	cfg.SecretKey = testenv.SecretKey(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AutoMigrate = true
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := app.Start(ctx, cfg, observe.DiscardLogger())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cardbridge: %v", err)
		}
	})
	if err := svc.Store().AddBinding(ctx, store.Binding{Source: boundSource, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}); err != nil {
		t.Fatal(err)
	}
	return ns.URL()
}

// TestExternalDeployment drives a running cardbridge with --nats-url: the
// bench only publishes and subscribes, and still checks every outcome.
func TestExternalDeployment(t *testing.T) {
	t.Parallel()
	natsURL := deployment(t)
	cfg := bench.Defaults()
	cfg.NATSURL = natsURL
	cfg.Source = boundSource
	cfg.Requests = 100
	cfg.Settle = 200 * time.Millisecond
	cfg.IdleTimeout = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := bench.Run(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := r.Outcomes
	if !r.Passed || o.Issued != 100 || o.Duplicates != 0 || o.Missing != 0 || r.Mode != "external" {
		t.Fatalf("want 100 requests with one card.issued each, got %+v (mode %s, problems %v)", o, r.Mode, r.Problems)
	}
	if r.Processes != nil || r.CPU != nil {
		t.Error("an external run knows nothing of the deployment's processes and must not pretend to")
	}
}

// TestFailedRequestsFailTheRun sends requests from a source that is not
// bound: each gets a card.failed, which the bench must count by reason and
// turn into a non-zero exit.
func TestFailedRequestsFailTheRun(t *testing.T) {
	t.Parallel()
	natsURL := deployment(t)
	var stdout, stderr bytes.Buffer
	code := cli.Main(context.Background(), []string{"bench", "--nats-url", natsURL, "--source", "urn:erp:not-bound",
		"--requests", "20", "--settle", "100ms", "--idle-timeout", "20s"},
		cli.Env{Getenv: os.Getenv, Stdout: &stdout, Stderr: &stderr})
	if code != 1 {
		t.Fatalf("exit code %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"unbound_source 20", "FAIL"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the report does not say %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "verification failed") {
		t.Errorf("stderr lacks the one-line reason:\n%s", stderr.String())
	}
}
