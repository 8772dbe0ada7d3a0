package event

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

const testTraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// validRequest is a request that passes every check.
func validRequest() Request {
	return Request{
		ID:          "req-0001",
		Source:      "urn:erp:acme",
		Subject:     "E-42",
		Type:        TypeCardRequested,
		Time:        time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC),
		TraceParent: testTraceParent,
		TraceState:  "acme=1",
		Data: RequestData{
			Employee:  Employee{ID: "E-42", FirstName: "Ada", LastName: "Lovelace", Email: "ada@acme.example"},
			ClientID:  7,
			Reference: "PO-2026-001",
		},
	}
}

func encodeRequest(t testing.TB, r Request, mode Mode) Message {
	t.Helper()
	m, err := EncodeRequest(r, mode)
	require.NoError(t, err)
	return m
}

// structured returns a structured-mode header.
func structured() nats.Header {
	return nats.Header{"content-type": {"application/cloudevents+json"}}
}

// binaryHeader returns the headers of a valid binary-mode request.
func binaryHeader() nats.Header {
	return nats.Header{
		"ce-specversion": {"1.0"},
		"ce-id":          {"req-0001"},
		"ce-source":      {"urn:erp:acme"},
		"ce-type":        {TypeCardRequested},
		"ce-subject":     {"E-42"},
		"content-type":   {"application/json"},
	}
}

const validData = `{"employee":{"id":"E-42","firstName":"Ada","lastName":"Lovelace"},"clientId":7}`

func requireDecodeError(t *testing.T, err error, reason string) *DecodeError {
	t.Helper()
	require.Error(t, err)
	var de *DecodeError
	require.ErrorAs(t, err, &de)
	require.Equal(t, reason, de.Reason, "message: %s", de.Message)
	require.NotContains(t, de.Message, "\n")
	return de
}
