package app_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

// An ERP can speak only for itself: with a NATS server running
// authorization, each ERP's user may publish only on its own subject
// (employee.card.requested.<erp>), and each source's binding names that
// publisher. Acme cannot obtain a card for globex's client by any subject,
// header or field, nor take globex's request id.
func TestAnERPCanSpeakOnlyForItself(t *testing.T) {
	ctx := context.Background()
	erpUser := func(name string) *server.User {
		return &server.User{Username: name, Password: name + "-secret", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"employee.card.requested." + name}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}
	}
	s, as := natsWithUsers(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "cardbridge", Password: "cardbridge-secret"}, erpUser("acme"), erpUser("globex")}
	}, func(user string) string { return user + "-secret" })
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: "urn:erp:acme", ClientID: 1, SavingsAccountID: 1, CardProductID: 1, Publisher: "acme"}))
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: "urn:erp:globex", ClientID: 2, SavingsAccountID: 2, CardProductID: 1, Publisher: "globex"}))
	require.ErrorIs(t, st.AddBinding(ctx, store.Binding{Source: "urn:erp:globex", ClientID: 1, SavingsAccountID: 1, CardProductID: 1, Publisher: "acme"}),
		store.ErrPublisherMismatch, "a source speaks through one identity")

	_, acme := testenv.JetStream(t, as("acme"))
	_, globex := testenv.JetStream(t, as("globex"))
	send := func(js jetstream.JetStream, subject, source string, clientID int64, id string) error {
		r := request(source, clientID)
		r.ID = id
		m, err := event.EncodeRequest(r, event.Binary)
		require.NoError(t, err)
		msg := m.NATS()
		msg.Subject = subject
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = js.PublishMsg(pctx, msg)
		return err
	}

	// Acme's own request, on its own subject: issued.
	require.NoError(t, send(acme, "employee.card.requested.acme", "urn:erp:acme", 1, "acme-1"))
	// Globex's subject and the contract's subject are closed to acme.
	require.Error(t, send(acme, "employee.card.requested.globex", "urn:erp:globex", 2, "globex-1"))
	require.Error(t, send(acme, "employee.card.requested", "urn:erp:globex", 2, "globex-1"))
	// On its own subject, acme names globex as the source: refused, and the
	// id stays free.
	require.NoError(t, send(acme, "employee.card.requested.acme", "urn:erp:globex", 2, "globex-1"))
	// Whoever may publish on the contract's subject cannot name globex either.
	require.NoError(t, send(s.js, "employee.card.requested", "urn:erp:globex", 2, "globex-2"))
	// On its own subject, acme names a source bound to no publisher (one
	// trusted on the contract's subject only): refused too.
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: "urn:erp:trusted", ClientID: 2, SavingsAccountID: 2, CardProductID: 1}))
	require.NoError(t, send(acme, "employee.card.requested.acme", "urn:erp:trusted", 2, "trusted-1"))
	// Globex's own request, with the id acme tried to take: issued.
	require.NoError(t, send(globex, "employee.card.requested.globex", "urn:erp:globex", 2, "globex-1"))

	outs := s.outcomes(t, 2)
	(&bundle{js: s.js, store: st}).settle(t)
	require.EqualValues(t, 2, s.outcomeCount(t), "the refused messages answer no one")
	ids := map[string]string{}
	for _, o := range outs {
		require.Equal(t, event.TypeCardIssued, o.Type)
		d := o.Data.(event.Issued)
		ids[d.RequestSource] = d.RequestID
	}
	require.Equal(t, map[string]string{"urn:erp:acme": "acme-1", "urn:erp:globex": "globex-1"}, ids)
	require.Equal(t, 1, s.sb.CardCount(1))
	require.Equal(t, 1, s.sb.CardCount(2), "one card for globex's client: its own")

	dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{Reason: event.ReasonUnboundSource})
	require.NoError(t, err)
	require.Len(t, dls, 3, "each refused message is kept")
	for _, d := range dls {
		require.True(t, strings.HasPrefix(d.RequestID, "ERP/"), "kept under its place in the stream, not the named id: %s", d.RequestID)
		require.True(t, strings.Contains(d.Message, "accepted only on employee.card.requested.globex") ||
			strings.Contains(d.Message, `not bound to publisher "acme"`), d.Message)
	}
}

// deploy/nats.conf, the configuration docker-compose.yml runs, does what it
// says: an ERP's user may publish on its own subject and on no other.
func TestComposeNATSConfigurationConfinesEachERP(t *testing.T) {
	opts, err := server.ProcessConfigFile("../../deploy/nats.conf")
	require.NoError(t, err)
	ns, err := broker.StartEmbeddedWith(t.TempDir(), 0, func(o *server.Options) {
		o.Users, o.Authorization = opts.Users, opts.Authorization
	})
	require.NoError(t, err)
	t.Cleanup(ns.Stop)
	u, err := url.Parse(ns.URL())
	require.NoError(t, err)
	u.User = url.UserPassword("cardbridge", "cardbridge-demo")
	_, js := testenv.JetStream(t, u.String())
	_, err = broker.Ensure(context.Background(), js, broker.DefaultTopology())
	require.NoError(t, err)
	u.User = url.UserPassword("acme", "acme-demo")
	_, acme := erpJetStream(t, u.String(), "acme")
	for subject, allowed := range map[string]bool{
		"employee.card.requested.acme": true, "employee.card.requested.globex": false, "employee.card.requested": false,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := acme.Publish(ctx, subject, []byte("{}"))
		cancel()
		require.Equal(t, allowed, err == nil, "acme on %s: %v", subject, err)
	}
}

// Requests queued on the contract's subject before their source was bound
// to a publisher are taken as sent, under the trust of then; later ones on
// that subject are refused.
func TestRequestsQueuedBeforeAPublisherWasSetAreAnswered(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	p.stop()
	queued := s.publish(t, 2) // while no process runs
	st, err := store.Open(ctx, store.Options{URL: s.cfg.DatabaseURL})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: erp, ClientID: 1, SavingsAccountID: 1, CardProductID: 1, Publisher: "acme"}))
	s.start(t, s.cfg)
	outs := s.outcomes(t, 2)
	requireIssuedOnce(t, s.sb, outs, queued)
	s.publish(t, 1) // after: on the contract's subject, refused
	require.Eventually(t, func() bool {
		dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{Reason: event.ReasonUnboundSource})
		require.NoError(t, err)
		return len(dls) == 1
	}, 20*time.Second, 20*time.Millisecond)
	require.Len(t, s.sb.Cards(), 2)
}
