package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/store"
)

func keysCmd(ctx context.Context, args []string, env Env) error {
	return dispatch(ctx, args, env, "keys",
		"Usage: cardbridge keys status|reseal [--dry-run]\n"+
			"  status              count the self-service passwords by the key they need\n"+
			"  reseal [--dry-run]  seal every password a previous key opens under the current key\n"+
			"\nCARDBRIDGE_SECRET_KEY and CARDBRIDGE_SECRET_KEY_PREVIOUS are the keys, as for run;\n"+
			"DATABASE_URL names the database. No password or key is ever printed.\n",
		action{"status", keysStatus}, action{"reseal", keysReseal})
}

// keyring is the Box the environment's keys make, and the fingerprints of
// its previous keys, to name them in reports.
type keyring struct {
	box      *secret.Box
	previous []string
}

func readKeys(env Env) (keyring, error) {
	key, previous, err := config.SecretKeys(env.getenv)
	if err != nil {
		return keyring{}, err
	}
	box, err := secret.NewBox(key, previous...)
	if err != nil {
		return keyring{}, fmt.Errorf("CARDBRIDGE_SECRET_KEY: %w", err)
	}
	k := keyring{box: box}
	for _, p := range previous {
		k.previous = append(k.previous, secret.KeyID(p))
	}
	return k, nil
}

// name names a key as secret.Box.OpenKey reports it.
func (k keyring) name(key int) string {
	if key == secret.KeyPrimary {
		return fmt.Sprintf("CARDBRIDGE_SECRET_KEY (%s)", k.box.KeyID())
	}
	return fmt.Sprintf("CARDBRIDGE_SECRET_KEY_PREVIOUS[%d] (%s)", key-1, k.previous[key-1])
}

func keysStatus(ctx context.Context, args []string, env Env) error {
	fs := newFlags("keys status", "keys status\n\nCount the self-service passwords recorded as sealed under the current key\n(CARDBRIDGE_SECRET_KEY), and open the others to tell which configured key\nthey need, if any. The old keys can go once none needs a previous key.", env)
	if err := parse(fs, args); err != nil {
		return err
	}
	keys, err := readKeys(env)
	if err != nil {
		return err
	}
	s, err := openStore(ctx, env)
	if err != nil {
		return err
	}
	defer s.Close()

	byKey, err := s.SealingKeyCounts(ctx)
	if err != nil {
		return err
	}
	// The rows not recorded under the current key are read and opened; the
	// others were sealed under it, by this key's own fingerprint.
	rows, err := s.UsersNotSealedUnder(ctx, keys.box.KeyID())
	if err != nil {
		return err
	}
	opened := map[int]int{}
	var unopened []int64
	for _, u := range rows {
		_, key, err := keys.box.OpenKey(u.PasswordSealed, store.SealingContext(u.ClientID, u.Username))
		if err != nil {
			unopened = append(unopened, u.ClientID)
			continue
		}
		opened[key]++
	}

	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "sealed under the current key %s\t%d\n", keys.box.KeyID(), byKey[keys.box.KeyID()])
	fmt.Fprintf(tw, "sealed under an older or unknown key\t%d\n", len(rows))
	if opened[secret.KeyPrimary] > 0 {
		fmt.Fprintf(tw, "  opened by the current key, not yet recorded\t%d\n", opened[secret.KeyPrimary])
	}
	for i := range keys.previous {
		fmt.Fprintf(tw, "  opened by %s\t%d\n", keys.name(i+1), opened[i+1])
	}
	fmt.Fprintf(tw, "  opened by no configured key\t%d\n", len(unopened))
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case len(rows) == 0:
		fmt.Fprintln(env.Stdout, "no password needs a previous key")
	case len(rows) > len(unopened):
		fmt.Fprintln(env.Stdout, "cardbridge keys reseal seals them under the current key")
	}
	if len(unopened) > 0 {
		fmt.Fprintf(env.Stdout, "no configured key opens the password of %s\n", clients(unopened, len(unopened)))
	}
	return nil
}

func keysReseal(ctx context.Context, args []string, env Env) error {
	fs := newFlags("keys reseal", "keys reseal [--dry-run]\n\nSeal under the current key (CARDBRIDGE_SECRET_KEY) every self-service password\nthat a previous key (CARDBRIDGE_SECRET_KEY_PREVIOUS) opens, and record the key of\nthose already sealed under the current one. A password a running process reseals\nmeanwhile keeps that process's value. Fails, naming the clients, when no\nconfigured key opens some password.", env)
	dryRun := fs.Bool("dry-run", false, "report what would be resealed, change nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	keys, err := readKeys(env)
	if err != nil {
		return err
	}
	log, err := env.logger()
	if err != nil {
		return err
	}
	s, err := openStore(ctx, env)
	if err != nil {
		return err
	}
	defer s.Close()

	r, err := resealAll(ctx, s, keys.box, *dryRun, log)
	r.print(env.Stdout, keys.box.KeyID(), *dryRun)
	if err != nil {
		return err
	}
	if len(r.unopened) > 0 {
		// One line, however many: stdout lists them all.
		return fmt.Errorf("no configured key opens the password of %s: left as it is", clients(r.unopened, 10))
	}
	return nil
}

// resealReport is what resealAll did, or would do on a dry run.
type resealReport struct {
	resealed  int     // opened by a previous key, sealed under the current one
	recorded  int     // sealed under the current key, which is now recorded
	meanwhile int     // changed by another process between reading and writing
	unopened  []int64 // clients whose password no configured key opens
}

// resealAll seals under box's primary key every password not recorded as
// sealed under it that another of its keys opens, and records the key of
// those it finds already sealed under it. Each write is a compare-and-swap
// on the ciphertext read, so a password a running process resealed
// meanwhile keeps that value. On a dry run nothing is written.
func resealAll(ctx context.Context, s *store.Store, box *secret.Box, dryRun bool, log *slog.Logger) (resealReport, error) {
	var r resealReport
	rows, err := s.UsersNotSealedUnder(ctx, box.KeyID())
	if err != nil {
		return r, err
	}
	for _, u := range rows {
		ad := store.SealingContext(u.ClientID, u.Username)
		password, key, err := box.OpenKey(u.PasswordSealed, ad)
		if err != nil {
			r.unopened = append(r.unopened, u.ClientID)
			continue
		}
		sealed := u.PasswordSealed
		if key != secret.KeyPrimary {
			if sealed, err = box.Seal(password, ad); err != nil {
				return r, fmt.Errorf("resealing the password of client %d: %w", u.ClientID, err)
			}
		}
		if !dryRun {
			done, err := s.ResealPassword(ctx, u.ClientID, u.PasswordSealed, sealed, box.KeyID())
			if err != nil {
				return r, err
			}
			if !done {
				log.Info("password changed meanwhile, left as it is", "client_id", u.ClientID)
				r.meanwhile++
				continue
			}
		}
		if key == secret.KeyPrimary {
			r.recorded++
		} else {
			r.resealed++
		}
	}
	return r, nil
}

func (r resealReport) print(w io.Writer, keyID string, dryRun bool) {
	resealed, recorded := "resealed", "recorded"
	if dryRun {
		resealed, recorded = "would reseal", "would record"
	}
	fmt.Fprintf(w, "%s %d passwords under the current key %s\n", resealed, r.resealed, keyID)
	fmt.Fprintf(w, "%s the key of %d passwords already sealed under it\n", recorded, r.recorded)
	if r.meanwhile > 0 {
		fmt.Fprintf(w, "left %d passwords a running process changed meanwhile (see cardbridge keys status)\n", r.meanwhile)
	}
	if len(r.unopened) > 0 {
		fmt.Fprintf(w, "no configured key opens the password of %s\n", clients(r.unopened, len(r.unopened)))
	}
}

// clients names clients by id, e.g. "clients 7, 9", the first max of them.
func clients(ids []int64, max int) string {
	s := make([]string, 0, len(ids))
	for _, id := range ids[:min(len(ids), max)] {
		s = append(s, strconv.FormatInt(id, 10))
	}
	if len(ids) > max {
		s = append(s, fmt.Sprintf("and %d more", len(ids)-max))
	}
	if len(ids) == 1 {
		return "client " + s[0]
	}
	return "clients " + strings.Join(s, ", ")
}
