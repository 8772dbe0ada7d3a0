// Package cli is the cardbridge command line: one function, Main, that
// parses the arguments and runs a subcommand, so tests run the very same
// program as the binary.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/observe"
)

// Env is what a command reads and writes besides its arguments.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
}

func (e Env) getenv(name string) string {
	if e.Getenv == nil {
		return ""
	}
	return e.Getenv(name)
}

func (e Env) getenvOr(name, def string) string {
	if v := strings.TrimSpace(e.getenv(name)); v != "" {
		return v
	}
	return def
}

// logger builds the logger from LOG_LEVEL and LOG_FORMAT, for commands
// that read nothing else of the configuration.
func (e Env) logger() (*slog.Logger, error) {
	l, err := config.LoggingFromEnv(e.getenv)
	if err != nil {
		return nil, err
	}
	return e.loggerFor(l), nil
}

// loggerFor builds the logger the configuration read.
func (e Env) loggerFor(l config.Logging) *slog.Logger {
	return observe.NewLogger(e.Stderr, l.Level, string(l.Format))
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, env Env) error
}

func commands() []command {
	return []command{
		{"run", "the production process: consumer, outbox relay, health endpoints", runCmd},
		{"migrate", "apply, roll back or list database migrations (up|down|status)", migrateCmd},
		{"bindings", "authorise CloudEvent sources to order for MBanq clients (add|list|remove)", bindingsCmd},
		{"dev", "zero-setup demo: embedded NATS, MBanq sandbox, consumer and relay", devCmd},
		{"sandbox", "the MBanq sandbox as a standalone HTTP server", sandboxCmd},
		{"publish", "publish one employee.card.requested", publishCmd},
		{"replay", "re-drive dead-lettered requests under their original CloudEvent id", replayCmd},
		{"keys", "count or reseal self-service passwords for a key rotation (status|reseal)", keysCmd},
		{"bench", "load generator and end-to-end benchmark", benchCmd},
	}
}

// Main runs the command named by args[0] and returns the exit code: 0 on
// success, 2 for bad usage, 1 for any other failure, with a one-line reason
// on stderr.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	if env.Stderr == nil {
		env.Stderr = io.Discard
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], env)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(env.Stderr, "cardbridge %s: %v\n", c.name, oneLine(err))
			return 2
		default:
			fmt.Fprintf(env.Stderr, "cardbridge %s: %v\n", c.name, oneLine(err))
			return 1
		}
	}
	fmt.Fprintf(env.Stderr, "cardbridge: unknown command %q (see cardbridge --help)\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "cardbridge issues MBanq virtual debit cards requested by an ERP over NATS JetStream.")
	fmt.Fprintln(w, "\nUsage: cardbridge <command> [flags]   (cardbridge <command> --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
}

// errUsage marks errors in how a command was called (exit code 2).
var errUsage = errors.New("usage")

type usageError struct{ msg string }

func (e usageError) Error() string   { return e.msg }
func (e usageError) Is(t error) bool { return t == errUsage }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// newFlags returns a flag set that writes its help to stdout and its
// errors to nowhere (Main prints them on one line).
func newFlags(name, synopsis string, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fs.SetOutput(env.Stdout)
		fmt.Fprintf(env.Stdout, "Usage: cardbridge %s\n\n", synopsis)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parse parses args, turning flag errors into usage errors. --help prints
// the usage and returns flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return flag.ErrHelp // the flag package has printed the usage
		}
		return usagef("%v", err)
	}
	return nil
}

// oneLine is an error's text on one line, fit for a terminal: errors may
// quote what a publisher or the bank wrote.
func oneLine(err error) string {
	return printable(strings.Join(strings.Fields(err.Error()), " "))
}

// databaseURL is DATABASE_URL, or the local server of a development machine.
func databaseURL(env Env) string { return env.getenvOr("DATABASE_URL", config.DefaultDatabaseURL) }

// action is one subcommand of a command with several (bindings, keys).
type action struct {
	name string
	run  func(ctx context.Context, args []string, env Env) error
}

// dispatch runs the action args[0] names with the rest of args. --help
// prints usage; no action, or an unknown one, is a usage error naming the
// actions.
func dispatch(ctx context.Context, args []string, env Env, command, usage string, actions ...action) error {
	names := make([]string, len(actions))
	for i, a := range actions {
		names[i] = a.name
	}
	want := "want " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" {
		fmt.Fprint(env.Stdout, usage)
		if len(args) == 0 {
			return usagef("%s", want)
		}
		return nil
	}
	for _, a := range actions {
		if a.name == args[0] {
			return a.run(ctx, args[1:], env)
		}
	}
	return usagef("unknown %s action %q: %s", command, args[0], want)
}
