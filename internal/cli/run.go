package cli

import (
	"context"

	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/config"
)

func runCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("run", "run [--migrate]\n\nThe production process. Configuration comes from the environment (see README.md).", env)
	migrate := fs.Bool("migrate", false, "apply pending migrations before starting (default: refuse to start while any are pending); also CARDBRIDGE_AUTO_MIGRATE=true")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := config.FromEnv(env.getenv)
	if err != nil {
		return err
	}
	if *migrate {
		cfg.AutoMigrate = true
	}
	log := env.loggerFor(cfg.Logging) // read with the rest, once
	tuneGC(env, memoryLimitFor(cfg.MaxInFlight))
	svc, err := app.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
