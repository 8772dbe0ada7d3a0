package cli

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"text/tabwriter"

	"github.com/cardbridge/cardbridge/store"
)

func bindingsCmd(ctx context.Context, args []string, env Env) error {
	return dispatch(ctx, args, env, "bindings",
		"Usage: cardbridge bindings add|list|remove [flags]   (DATABASE_URL names the database)\n"+
			"  add    --source S --client-id N --savings-account-id N --card-product-id N [--publisher P]\n"+
			"  list\n"+
			"  remove --source S --client-id N\n",
		action{"add", bindingsAdd}, action{"list", bindingsList}, action{"remove", bindingsRemove})
}

// publisherName is what a publisher may be: one NATS subject token, as
// migration 00008 checks too.
var publisherName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func bindingsAdd(ctx context.Context, args []string, env Env) error {
	fs := newFlags("bindings add", "bindings add --source S --client-id N --savings-account-id N --card-product-id N [--publisher P]\n\nAuthorise CloudEvent source S to order cards for MBanq client N, from that\ndeposit account, with that card product. Adding an existing (source, client)\nupdates its account, product and publisher. With --publisher, S is accepted\nonly on the request subject followed by .P (employee.card.requested.P), which\nthe NATS server must let only that ERP's user publish on; every binding of S\nnames the same publisher.", env)
	var b store.Binding
	fs.StringVar(&b.Source, "source", "", "CloudEvent source of the ERP, e.g. urn:erp:acme (required)")
	fs.Int64Var(&b.ClientID, "client-id", 0, "MBanq client id of the business customer (required)")
	fs.Int64Var(&b.SavingsAccountID, "savings-account-id", 0, "the client's deposit account the cards draw on (required)")
	fs.Int64Var(&b.CardProductID, "card-product-id", 0, "the virtual card product (required)")
	fs.StringVar(&b.Publisher, "publisher", "", "the ERP's NATS identity: the last token of the only subject S is accepted on (letters, digits, - and _)")
	if err := parse(fs, args); err != nil {
		return err
	}
	var missing []error
	if b.Source == "" {
		missing = append(missing, errors.New("--source is required"))
	}
	for name, v := range map[string]int64{"--client-id": b.ClientID, "--savings-account-id": b.SavingsAccountID, "--card-product-id": b.CardProductID} {
		if v <= 0 {
			missing = append(missing, fmt.Errorf("%s must be a positive integer", name))
		}
	}
	if b.Publisher != "" && !publisherName.MatchString(b.Publisher) {
		missing = append(missing, errors.New("--publisher must be 1 to 64 letters, digits, - or _ (a NATS subject token)"))
	}
	if len(missing) > 0 {
		return usagef("%v", errors.Join(missing...))
	}
	s, err := openStore(ctx, env)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.AddBinding(ctx, b); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "bound %s to client %d (savings account %d, card product %d)\n", printable(b.Source), b.ClientID, b.SavingsAccountID, b.CardProductID)
	if b.Publisher != "" {
		fmt.Fprintf(env.Stdout, "accepted only from publisher %s\n", printable(b.Publisher))
	}
	return nil
}

func bindingsList(ctx context.Context, args []string, env Env) error {
	fs := newFlags("bindings list", "bindings list", env)
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := openStore(ctx, env)
	if err != nil {
		return err
	}
	defer s.Close()
	bs, err := s.Bindings(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tCLIENT\tSAVINGS ACCOUNT\tCARD PRODUCT\tPUBLISHER\tCREATED")
	for _, b := range bs {
		pub := b.Publisher
		if pub == "" {
			pub = "(any)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", printable(b.Source), b.ClientID, b.SavingsAccountID, b.CardProductID, printable(pub), b.CreatedAt.UTC().Format("2006-01-02T15:04:05Z"))
	}
	return tw.Flush()
}

func bindingsRemove(ctx context.Context, args []string, env Env) error {
	fs := newFlags("bindings remove", "bindings remove --source S --client-id N", env)
	source := fs.String("source", "", "CloudEvent source (required)")
	clientID := fs.Int64("client-id", 0, "MBanq client id (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *source == "" || *clientID <= 0 {
		return usagef("--source and a positive --client-id are required")
	}
	s, err := openStore(ctx, env)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.RemoveBinding(ctx, *source, *clientID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no binding of %s to client %d", *source, *clientID)
		}
		return err
	}
	fmt.Fprintf(env.Stdout, "removed binding of %s to client %d\n", printable(*source), *clientID)
	return nil
}
