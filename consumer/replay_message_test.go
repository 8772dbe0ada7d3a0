package consumer_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/store"
)

func TestMessageIsTheOriginalLessServerDirectives(t *testing.T) {
	t.Parallel()
	d := store.DeadLetter{
		ID:      7,
		Subject: "employee.card.requested",
		Header: map[string][]string{
			"ce-id":                       {"r-1"},
			"ce-source":                   {"urn:erp:acme"},
			"traceparent":                 {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			"Nats-Msg-Id":                 {"r-1"},
			"Nats-Expected-Last-Sequence": {"41"},
			"cardbridge-replay":           {"1"}, // from an earlier replay, in another case
		},
		Data:        []byte(`{"clientId":1}`),
		ReplayCount: 2,
	}
	m := consumer.ReplayMessage(d)
	require.Equal(t, d.Subject, m.Subject)
	require.Equal(t, d.Data, m.Data)
	require.Equal(t, "r-1", m.Header.Get("ce-id"))
	require.Equal(t, "urn:erp:acme", m.Header.Get("ce-source"))
	require.Equal(t, d.Header["traceparent"][0], m.Header.Get("traceparent"))
	require.Equal(t, "2", m.Header.Get(consumer.ReplayHeader))
	require.Regexp(t, `^cardbridge-replay-7-2-[0-9a-f]{32}$`, m.Header.Get("Nats-Msg-Id"), "a fresh id per generation, not the original's")
	require.NotEqual(t, m.Header.Get("Nats-Msg-Id"), consumer.ReplayMessage(d).Header.Get("Nats-Msg-Id"),
		"not guessable: another publisher must not be able to have a replay dropped as its duplicate")
	require.Empty(t, m.Header.Get("Nats-Expected-Last-Sequence"))
	require.NotContains(t, m.Header, "cardbridge-replay")
	require.Len(t, m.Header, 5)

	// The dead letter is not changed.
	require.Equal(t, []string{"r-1"}, d.Header["Nats-Msg-Id"])
}

func TestRefused(t *testing.T) {
	t.Parallel()
	require.True(t, consumer.ReplayRefused(store.ErrAlreadyIssued))
	require.False(t, consumer.ReplayRefused(store.ErrNotFound))
	require.False(t, consumer.ReplayRefused(nil))
}

// A dead letter whose source is now bound to a publisher is replayed on
// that publisher's subject, where the source is accepted.
func TestMessageGoesWhereItsSourceIsAccepted(t *testing.T) {
	t.Parallel()
	d := store.DeadLetter{ID: 1, Subject: "employee.card.requested", Data: []byte(`{}`)}
	require.Equal(t, "employee.card.requested", consumer.ReplayMessage(d).Subject)
	d.Publisher = "acme"
	require.Equal(t, "employee.card.requested.acme", consumer.ReplayMessage(d).Subject)
	d.Subject = "employee.card.requested.acme"
	require.Equal(t, "employee.card.requested.acme", consumer.ReplayMessage(d).Subject)
}
