package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/store"
)

func replayCmd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("replay", "replay (--id N | [--reason R] [--source S] [--since T] [--until T]) [--dry-run]\n\nRe-drive dead-lettered requests: each original message is republished under its\noriginal CloudEvent id, so a request that already has a card is never ordered\ntwice (such requests are refused). Its new outcome event gets a new id per replay.\nDATABASE_URL and NATS_URL name the deployment.", env)
	natsURL := natsURLFlag(fs, env)
	var f store.DeadLetterFilter
	fs.Int64Var(&f.ID, "id", 0, "replay this dead letter")
	fs.StringVar(&f.Reason, "reason", "", "replay those with this reason, e.g. retries_exhausted")
	fs.StringVar(&f.Source, "source", "", "replay those from this CloudEvent source")
	since := fs.String("since", "", "replay those recorded at or after this time (RFC 3339, or a duration ago such as 2h)")
	until := fs.String("until", "", "replay those recorded before this time (RFC 3339, or a duration ago)")
	fs.BoolVar(&f.IncludeReplayed, "include-replayed", false, "also replay dead letters already replayed")
	fs.IntVar(&f.Limit, "limit", 1000, "replay at most this many")
	dryRun := fs.Bool("dry-run", false, "list what would be replayed, change nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	var err error
	if f.Since, err = parseWhen(*since); err != nil {
		return usagef("--since: %v", err)
	}
	if f.Until, err = parseWhen(*until); err != nil {
		return usagef("--until: %v", err)
	}
	if f.ID == 0 && f.Reason == "" && f.Source == "" && f.Since.IsZero() && f.Until.IsZero() {
		return usagef("name a dead letter (--id) or a filter (--reason, --source, --since, --until)")
	}
	s, err := openStore(ctx, env)
	if err != nil {
		return err
	}
	defer s.Close()

	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if *dryRun {
		dls, err := s.DeadLetters(ctx, f)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tSOURCE\tREQUEST\tREASON\tRECORDED\tREPLAYS")
		for _, d := range dls {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\n", d.ID, printable(d.Source), printable(d.RequestID), printable(d.Reason), d.RecordedAt.UTC().Format(time.RFC3339), d.ReplayCount)
		}
		return nil
	}

	nc, js, err := connect(*natsURL, "replay")
	if err != nil {
		return err
	}
	defer nc.Close()
	results, err := consumer.ReplayMatching(ctx, s, js, f)
	if err != nil && len(results) == 0 {
		return err
	}
	failed := 0
	fmt.Fprintln(tw, "ID\tSOURCE\tREQUEST\tREASON\tRESULT")
	for _, r := range results {
		res := fmt.Sprintf("replayed (generation %d)", r.DeadLetter.ReplayCount)
		if r.Err != nil {
			failed++
			res = "not replayed: " + r.Err.Error()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.DeadLetter.ID, printable(r.DeadLetter.Source), printable(r.DeadLetter.RequestID), printable(r.DeadLetter.Reason), printable(res))
	}
	if f.ID != 0 && len(results) == 0 {
		return fmt.Errorf("no dead letter %d", f.ID)
	}
	if failed > 0 {
		tw.Flush()
		return fmt.Errorf("%d of %d dead letters not replayed", failed, len(results))
	}
	return err
}

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
	}
	return time.Now().Add(-d), nil
}
