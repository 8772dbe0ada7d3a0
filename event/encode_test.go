package event

import (
	"encoding/json"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func TestEncodeRequestStructured(t *testing.T) {
	t.Parallel()
	m := encodeRequest(t, validRequest(), Structured)
	require.Equal(t, TypeCardRequested, m.Subject)
	require.Equal(t, nats.Header{"content-type": {"application/cloudevents+json"}}, m.Header)
	require.JSONEq(t, `{
		"specversion":"1.0","id":"req-0001","source":"urn:erp:acme","type":"employee.card.requested",
		"subject":"E-42","time":"2026-11-25T09:30:00Z","datacontenttype":"application/json",
		"traceparent":"`+testTraceParent+`","tracestate":"acme=1",
		"data":{"employee":{"id":"E-42","firstName":"Ada","lastName":"Lovelace","email":"ada@acme.example"},"clientId":7,"reference":"PO-2026-001"}
	}`, string(m.Data))
}

func TestEncodeRequestBinary(t *testing.T) {
	t.Parallel()
	m := encodeRequest(t, validRequest(), Binary)
	require.Equal(t, nats.Header{
		"ce-specversion": {"1.0"},
		"ce-id":          {"req-0001"},
		"ce-source":      {"urn:erp:acme"},
		"ce-type":        {TypeCardRequested},
		"ce-subject":     {"E-42"},
		"ce-time":        {"2026-11-25T09:30:00Z"},
		"content-type":   {"application/json"},
		"ce-traceparent": {testTraceParent},
		"ce-tracestate":  {"acme=1"},
	}, m.Header, "no Nats-Msg-Id: a replay keeps its id and must not be dropped")

	msg := m.NATS()
	require.Equal(t, m.Subject, msg.Subject)
	require.Equal(t, m.Data, msg.Data)
}

func TestEncodeRequestUnknownMode(t *testing.T) {
	t.Parallel()
	_, err := EncodeRequest(validRequest(), Mode(7))
	require.Error(t, err)
	require.Equal(t, "Mode(invalid)", Mode(7).String())
}

func TestDecodeOutcomeRejects(t *testing.T) {
	t.Parallel()
	_, err := DecodeOutcome(nats.Header{}, []byte(`{}`))
	require.Error(t, err)
	_, err = DecodeOutcome(nats.Header{"ce-specversion": {"9.9"}}, nil)
	require.Error(t, err)
	_, err = DecodeOutcome(nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"s"}, "ce-type": {TypeCardIssued}}, []byte(`[`))
	require.Error(t, err)

	o, err := DecodeOutcome(nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"s"}, "ce-type": {"other"}}, []byte(`{"a":1}`))
	require.NoError(t, err)
	require.Equal(t, json.RawMessage(`{"a":1}`), o.Data)
}
