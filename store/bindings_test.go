package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

// All the bindings of a source name the same publisher. A source bound to
// two clients before publishers existed, then given a publisher on one of
// its bindings, must keep it on both: removing that one binding must not
// silently open the source again to whatever publishes on the contract's
// subject.
func TestAPublisherCoversEveryBindingOfItsSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	for _, client := range []int64{1, 2} {
		require.NoError(t, s.AddBinding(ctx, store.Binding{Source: "urn:erp:acme", ClientID: client, SavingsAccountID: client, CardProductID: 1}))
	}
	require.NoError(t, s.AddBinding(ctx, store.Binding{Source: "urn:erp:acme", ClientID: 1, SavingsAccountID: 1, CardProductID: 1, Publisher: "acme"}))
	bs, err := s.Bindings(ctx)
	require.NoError(t, err)
	for _, b := range bs {
		require.Equal(t, "acme", b.Publisher, "binding of client %d", b.ClientID)
	}
	require.NoError(t, s.RemoveBinding(ctx, "urn:erp:acme", 1))
	adm, err := s.Admit(ctx, store.AdmissionQuery{Source: "urn:erp:acme", RequestID: "r", ClientID: 2})
	require.NoError(t, err)
	require.Equal(t, "acme", adm.SourcePublisher, "client 2's binding still speaks only through acme")
}
