package cli

import (
	"context"
	"fmt"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/store"
)

func migrateCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("migrate", "migrate up|down|status\n\nup applies every pending migration, down rolls back the latest, status lists them.\nSafe to run from several processes at once (an advisory lock serialises them).\nDATABASE_URL names the database.", env)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want one of up, down, status")
	}
	s, err := openStore(ctx, env)
	if err != nil {
		return err
	}
	defer s.Close()
	switch fs.Arg(0) {
	case "up":
		return s.MigrateUp(ctx, env.Stdout)
	case "down":
		return s.MigrateDown(ctx, env.Stdout)
	case "status":
		st, err := s.MigrationStatus(ctx)
		if err != nil {
			return err
		}
		for _, m := range st {
			state := "pending"
			if m.Applied {
				state = "applied"
			}
			fmt.Fprintf(env.Stdout, "%-8s %05d %s\n", state, m.Version, m.Name)
		}
		return nil
	}
	return usagef("unknown migrate action %q: want up, down or status", fs.Arg(0))
}

func openStore(ctx context.Context, env Env) (*store.Store, error) {
	return store.Open(ctx, store.Options{URL: secret.New(databaseURL(env))})
}
