package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// The demo's fixed names.
const (
	devSchema = "cardbridge_dev"
	devSource = "urn:erp:demo"
)

func devCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("dev", "dev [flags]\n\nZero-setup demo: an embedded NATS JetStream server, an in-process MBanq sandbox,\nmigrations, a demo binding, the consumer and the relay. Needs only Postgres\n(DATABASE_URL, default the local server). Its state lives in the schema\n"+devSchema+", which is recreated on every start, since the sandbox forgets\nits users and cards when it stops.", env)
	natsPort := fs.Int("nats-port", 4223, "port of the embedded NATS server (the local default 4222 is often taken; 0: any free port)")
	sandboxAddr := fs.String("sandbox-addr", "127.0.0.1:8090", "listen address of the MBanq sandbox")
	httpAddr := fs.String("http-addr", env.getenvOr("HTTP_ADDR", "127.0.0.1:8080"), "listen address of the health endpoints")
	demo := fs.Bool("demo", true, "publish one demo request at start and print its outcome")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := env.logger()
	if err != nil {
		return err
	}

	// Nothing is touched before the schema is reserved and every port is
	// had: a second dev on the same database, or a port taken, must not
	// drop a running dev's schema on its way to failing.
	base := databaseURL(env)
	reservation, err := store.ReserveSchema(ctx, base, devSchema)
	if errors.Is(err, store.ErrSchemaInUse) {
		return fmt.Errorf("another cardbridge dev is running on this database (it holds schema %s): stop it first, or point DATABASE_URL at another database", devSchema)
	}
	if err != nil {
		return err
	}
	defer reservation.Release(context.WithoutCancel(ctx))
	httpLn, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("HTTP: %w (try --http-addr, or stop what listens there)", err)
	}
	_ = httpLn.Close() // app.Start listens there again below

	natsDir, err := os.MkdirTemp("", "cardbridge-dev-nats-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(natsDir)
	ns, err := broker.StartEmbedded(natsDir, *natsPort)
	if err != nil {
		return fmt.Errorf("%w (is port %d free? try --nats-port)", err, *natsPort)
	}
	defer ns.Stop()

	seed := sandbox.DefaultSeed()
	sb := sandbox.New(seed)
	sbLn, err := net.Listen("tcp", *sandboxAddr)
	if err != nil {
		return fmt.Errorf("sandbox: %w (try --sandbox-addr)", err)
	}
	dbURL, err := devDatabase(ctx, reservation.Conn, base)
	if err != nil {
		return err
	}
	sbSrv := &http.Server{Handler: sb, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = sbSrv.Serve(sbLn) }()
	defer sbSrv.Close()

	key := make([]byte, secret.KeySize)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	cfg := config.Defaults()
	cfg.DatabaseURL = secret.New(dbURL)
	cfg.NATSURL = ns.URL()
	cfg.MBanq = config.MBanq{
		BaseURL:       "http://" + sbLn.Addr().String(),
		TenantID:      seed.TenantID,
		ClientID:      seed.OAuthClient.ID,
		ClientSecret:  seed.OAuthClient.Secret,
		AdminUsername: seed.Admin.Username,
		AdminPassword: seed.Admin.Password,
		OfficeID:      1,
	}
	cfg.SecretKey = key // the schema is new each run, so a new key each run is enough
	cfg.HTTPAddr = *httpAddr
	cfg.AutoMigrate = true
	// The console token and tracing come from the environment as for run.
	if cfg.Operations, err = config.OperationsFromEnv(env.getenv); err != nil {
		return err
	}

	svc, err := app.Start(ctx, cfg, log)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%w (try --http-addr)", err)
		}
		return err
	}
	if err := svc.Store().AddBinding(ctx, store.Binding{Source: devSource, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()

	fmt.Fprintf(env.Stdout, `
cardbridge dev is running.
  NATS (JetStream)  %s
  MBanq sandbox     http://%s   (inspect: /_sandbox/cards, /_sandbox/users)
  health            http://%s/readyz   (console: /console/, metrics: /metrics)
  database schema   %s
  binding           %s -> client 1, savings account 1, card product 1

Publish a request from another terminal:
  go run ./cmd/cardbridge publish --nats-url %s --source %s --client-id 1 \
      --employee-id E-1002 --first-name Grace --last-name Hopper --wait 10s

`, ns.URL(), sbLn.Addr(), svc.HTTPAddr(), devSchema, devSource, ns.URL(), devSource)

	if *demo {
		if err := devDemo(ctx, ns.URL(), env); err != nil {
			fmt.Fprintf(env.Stderr, "demo request: %s\n", oneLine(err))
		}
	}
	fmt.Fprintln(env.Stdout, "Press Ctrl-C to stop.")
	return <-done
}

// devDatabase recreates the dev schema, on conn (which holds its
// reservation), and returns a URL of base using it.
func devDatabase(ctx context.Context, conn *pgx.Conn, base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("DATABASE_URL must be a URL (postgres://user:password@host:5432/dbname) for cardbridge dev")
	}
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+devSchema+" CASCADE; CREATE SCHEMA "+devSchema); err != nil {
		return "", fmt.Errorf("preparing schema %s: %w", devSchema, err)
	}
	q := u.Query()
	q.Set("search_path", devSchema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// devDemo publishes one request and prints the outcome it produced.
func devDemo(ctx context.Context, natsURL string, env Env) error {
	nc, js, err := connect(natsURL, "dev")
	if err != nil {
		return err
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("card.>")
	if err != nil {
		return err
	}
	req := event.Request{
		ID:      uuid.NewString(),
		Source:  devSource,
		Subject: "E-1001",
		Time:    time.Now().UTC(),
		Data: event.RequestData{
			Employee:  event.Employee{ID: "E-1001", FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com"},
			ClientID:  1,
			Reference: "PO-2026-0001",
		},
	}
	msg, err := event.EncodeRequest(req, event.Binary)
	if err != nil {
		return err
	}
	if _, err := js.PublishMsg(ctx, msg.NATS()); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Published demo request %s for employee E-1001; its outcome:\n", req.ID)
	out, err := awaitOutcome(ctx, sub, event.OutcomeID(req.Source, req.ID), 30*time.Second)
	if err != nil {
		return err
	}
	return printOutcome(env, out)
}
