package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGBin is where the PostgreSQL server binaries are (override with
// CARDBRIDGE_TEST_PG_BIN).
const PGBin = "/usr/lib/postgresql/15/bin"

// PGServer is a private PostgreSQL server a test starts, stops, kills and
// promotes at will: for faults the shared server must not suffer.
type PGServer struct {
	t    testing.TB
	dir  string // data directory
	Port int
}

func pgBin(name string) string {
	if d := os.Getenv("CARDBRIDGE_TEST_PG_BIN"); d != "" {
		return filepath.Join(d, name)
	}
	return filepath.Join(PGBin, name)
}

// pgCommand runs a server binary, as the postgres user when the test runs
// as root (the server refuses to run as root).
func pgCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", pgBin(name)}, args...)...)
	}
	return exec.CommandContext(ctx, pgBin(name), args...)
}

func (p *PGServer) run(name string, args ...string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := pgCommand(ctx, name, args...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("testenv: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// pgDir makes a directory in the test's temporary directory that the
// server's user owns.
func pgDir(t testing.TB, name string) string {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testenv: running as root needs a postgres user for the server: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		// The server's user must reach its directory.
		for d := base; d != filepath.Dir(d); d = filepath.Dir(d) {
			if strings.HasPrefix(d, os.TempDir()) && d != os.TempDir() {
				if err := os.Chmod(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// FreePort is a port on 127.0.0.1 that nothing listens on now, for a
// server the test starts (or stops and starts again) on a known address.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// StartPostgres initialises and starts a private server on a free port,
// with trust authentication on 127.0.0.1 (replication included), and a
// database named cardbridge. It is stopped when the test ends.
func StartPostgres(t testing.TB) *PGServer {
	t.Helper()
	p := &PGServer{t: t, dir: pgDir(t, "primary"), Port: FreePort(t)}
	p.run("initdb", "-D", p.dir, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	p.configure()
	p.Start()
	t.Cleanup(p.stopQuietly)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.url("postgres"))
	if err != nil {
		t.Fatalf("testenv: connecting to the private server: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE cardbridge"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

// StartStandby makes a streaming standby of primary (pg_basebackup -R)
// and starts it on a free port.
func (p *PGServer) StartStandby(t testing.TB) *PGServer {
	t.Helper()
	s := &PGServer{t: t, dir: pgDir(t, "standby"), Port: FreePort(t)}
	s.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres", "-D", s.dir, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
	s.configure()
	s.Start()
	t.Cleanup(s.stopQuietly)
	return s
}

func (p *PGServer) configure() {
	p.t.Helper()
	conf := fmt.Sprintf("\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\nmax_connections = 100\nwal_level = replica\nhot_standby = on\n", p.Port)
	f, err := os.OpenFile(filepath.Join(p.dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(conf); err != nil {
		p.t.Fatal(err)
	}
}

// Start starts the server and waits until it accepts connections.
func (p *PGServer) Start() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.dir, "-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60", "start")
}

// Stop stops the server: mode "immediate" is a crash (no shutdown
// checkpoint, connections cut), "fast" a clean stop.
func (p *PGServer) Stop(mode string) {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.dir, "-m", mode, "-w", "-t", "60", "stop")
}

// Promote turns a standby into a primary and waits until it accepts
// writes.
func (p *PGServer) Promote() {
	p.t.Helper()
	p.run("pg_ctl", "-D", p.dir, "-w", "-t", "60", "promote")
}

func (p *PGServer) stopQuietly() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = pgCommand(ctx, "pg_ctl", "-D", p.dir, "-m", "immediate", "-w", "stop").Run()
}

// Host is the server's address, host:port.
func (p *PGServer) Host() string { return "127.0.0.1:" + strconv.Itoa(p.Port) }

// URL is a connection string to the cardbridge database.
func (p *PGServer) URL() string { return p.url("cardbridge") }

func (p *PGServer) url(db string) string {
	return "postgres://postgres@" + p.Host() + "/" + db + "?sslmode=disable"
}
