package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/schemas"
)

const testSource = "urn:cardbridge"

var issuedAt = time.Date(2026, 11, 25, 9, 30, 1, 500, time.UTC)

func testCard() Card {
	return Card{ID: 981, Token: "5c2b2c4c-3b5e-4bd0-9f8e-0f1b8c0e9d11", ProductID: 3, Status: "ACTIVE", IssuedAt: issuedAt}
}

func decodedRequest(t testing.TB) *Request {
	t.Helper()
	m := encodeRequest(t, validRequest(), Binary)
	r, err := Decode(m.Header, m.Data)
	require.NoError(t, err)
	return r
}

func TestOutcomeID(t *testing.T) {
	t.Parallel()
	a := OutcomeID("urn:erp:acme", "req-1")
	require.Equal(t, a, OutcomeID("urn:erp:acme", "req-1"), "deterministic")
	require.NotEqual(t, a, OutcomeID("urn:erp:acme", "req-2"))
	require.NotEqual(t, a, OutcomeID("urn:erp:other", "req-1"))
	// Pairs whose concatenation is equal must still differ.
	require.NotEqual(t, OutcomeID("a:b", "c"), OutcomeID("a", "b:c"))
	require.NotEqual(t, OutcomeID("ab", "c"), OutcomeID("a", "bc"))
	require.NotEqual(t, OutcomeID("1:a", "b"), OutcomeID("1", ":ab"))
	require.NotEqual(t, OutcomeID("", "x"), OutcomeID("x", ""))
	// Pinned: a change here changes every published id and breaks
	// deduplication across a deploy.
	require.Equal(t, "37992f97-519d-50f6-85dc-209b2b4baffd", OutcomeID("urn:erp:acme", "req-0001"))
	require.Len(t, a, 36)
}

// Each replay generation of a request is answered under an id of its own,
// decided where the outcome is built.
func TestRequestRefOutcomeIDPerGeneration(t *testing.T) {
	ref := RequestRef{Source: "urn:erp:acme", ID: "req-0001"}
	require.Equal(t, OutcomeID(ref.Source, ref.ID), ref.OutcomeID(), "the first outcome has the request's id")
	ref.Generation = 1
	first := ref.OutcomeID()
	require.NotEqual(t, OutcomeID("urn:erp:acme", "req-0001"), first)
	// Pinned, as above: replayed outcomes already published keep their ids.
	require.Equal(t, OutcomeID("urn:erp:acme", "req-0001\x00replay:1"), first)
	ref.Generation = 2
	require.NotEqual(t, first, ref.OutcomeID())

	f := NewFailed(testSource, ref, Failure{Reason: ReasonBankRejected, Message: "no"}, time.Now())
	require.Equal(t, ref.OutcomeID(), f.ID)
	require.Equal(t, ref.OutcomeID(), NewIssued(testSource, ref, testCard()).ID)
}

func TestEncodeIssuedHeaders(t *testing.T) {
	t.Parallel()
	o := NewIssued(testSource, decodedRequest(t).Ref(), testCard())
	m, err := o.Encode()
	require.NoError(t, err)

	id := OutcomeID("urn:erp:acme", "req-0001")
	require.Equal(t, TypeCardIssued, m.Subject)
	require.Equal(t, nats.Header{
		"ce-specversion": {"1.0"},
		"ce-id":          {id},
		"ce-source":      {testSource},
		"ce-type":        {TypeCardIssued},
		"ce-subject":     {"E-42"},
		"ce-time":        {"2026-11-25T09:30:01.0000005Z"},
		"content-type":   {"application/json"},
		"ce-traceparent": {testTraceParent},
		"ce-tracestate":  {"acme=1"},
		"Nats-Msg-Id":    {id},
	}, m.Header)
	require.JSONEq(t, `{
		"requestId":"req-0001","requestSource":"urn:erp:acme","employeeId":"E-42","clientId":7,
		"cardId":981,"cardToken":"5c2b2c4c-3b5e-4bd0-9f8e-0f1b8c0e9d11","productId":3,
		"status":"ACTIVE","issuedAt":"2026-11-25T09:30:01.0000005Z","reference":"PO-2026-001"}`, string(m.Data))
	require.NoError(t, schemas.ValidateIssued(m.Data))
}

func TestEncodeFailedHeadersWithoutTrace(t *testing.T) {
	t.Parallel()
	ref := RequestRef{ID: "req-9", Source: "urn:erp:acme"}
	o := NewFailed(testSource, ref, Failure{Reason: ReasonUnboundSource, Message: "source is not bound to client 7"}, issuedAt)
	m, err := o.Encode()
	require.NoError(t, err)
	require.Equal(t, TypeCardFailed, m.Subject)
	require.Equal(t, nats.Header{
		"ce-specversion": {"1.0"},
		"ce-id":          {OutcomeID("urn:erp:acme", "req-9")},
		"ce-source":      {testSource},
		"ce-type":        {TypeCardFailed},
		"ce-time":        {"2026-11-25T09:30:01.0000005Z"},
		"content-type":   {"application/json"},
		"Nats-Msg-Id":    {OutcomeID("urn:erp:acme", "req-9")},
	}, m.Header)
	require.JSONEq(t, `{"requestId":"req-9","requestSource":"urn:erp:acme","reason":"unbound_source","message":"source is not bound to client 7"}`, string(m.Data))
	require.NoError(t, schemas.ValidateFailed(m.Data))
}

func TestOutcomeRoundTrip(t *testing.T) {
	t.Parallel()
	req := decodedRequest(t)
	for _, o := range []Outcome{
		NewIssued(testSource, req.Ref(), testCard()),
		NewFailed(testSource, req.Ref(), Failure{Reason: ReasonBankRejected, Message: "insufficient funds", BankErrorCode: "error.msg.savingsaccount.transaction.insufficient.account.balance"}, issuedAt),
	} {
		t.Run(o.Type, func(t *testing.T) {
			require.NoError(t, o.Validate())
			m, err := o.Encode()
			require.NoError(t, err)
			got, err := DecodeOutcome(m.Header, m.Data)
			require.NoError(t, err)
			require.True(t, o.Time.Equal(got.Time))
			got.Time = o.Time
			require.Equal(t, o, got)
		})
	}
}

// Every outcome the constructors can build, including from the worst decode
// errors, must match its schema.
func TestOutcomesMatchSchemas(t *testing.T) {
	t.Parallel()
	req := decodedRequest(t)
	noRef := *req
	noRef.Data.Reference = ""
	_, err := Decode(nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"x"}, "ce-source": {"s"}, "ce-type": {"t"}, "ce-subject": {strings.Repeat("e", 100)}}, nil)
	require.Error(t, err)
	decodeErr := err.(*DecodeError)

	outcomes := []Outcome{
		NewIssued(testSource, req.Ref(), testCard()),
		NewIssued(testSource, noRef.Ref(), testCard()),
		NewFailed(testSource, decodeErr.Ref(), decodeErr.Failure(), issuedAt),
		NewFailed(testSource, req.Ref(), Failure{Reason: ReasonRetriesExhausted, Message: strings.Repeat("é", 5000)}, issuedAt),
		NewFailed(testSource, RequestRef{ID: "i", Source: "s", EmployeeID: "bad\nid"}, Failure{Reason: ReasonDuplicateConflict}, issuedAt),
	}
	for _, reason := range Reasons() {
		outcomes = append(outcomes, NewFailed(testSource, req.Ref(), Failure{Reason: reason, Message: "m"}, issuedAt))
	}
	for i, o := range outcomes {
		require.NoError(t, o.Validate(), "outcome %d", i)
		m, err := o.Encode()
		require.NoError(t, err, "outcome %d", i)
		require.NoError(t, schemas.Validate(o.Type+".json", m.Data), "outcome %d", i)
	}
	require.Error(t, NewFailed(testSource, req.Ref(), Failure{Reason: "made_up", Message: "m"}, issuedAt).Validate())
}

func TestEncodeRefusesHeaderInjection(t *testing.T) {
	t.Parallel()
	o := NewIssued(testSource, RequestRef{ID: "i", Source: "s", EmployeeID: "E\r\nNats-Msg-Id: forged"}, testCard())
	_, err := o.Encode()
	require.Error(t, err)

	_, err = Outcome{Type: TypeCardIssued, ID: "x", Source: "s"}.Encode()
	require.Error(t, err, "no data")
	_, err = Outcome{Type: TypeCardIssued, Source: "s", Data: json.RawMessage(`{}`)}.Encode()
	require.Error(t, err, "no id")
}

func TestReasonsMatchSchema(t *testing.T) {
	t.Parallel()
	raw, err := schemas.FS.ReadFile(schemas.FailedFile)
	require.NoError(t, err)
	var doc struct {
		Properties struct {
			Reason struct {
				Enum []string `json:"enum"`
			} `json:"reason"`
		} `json:"properties"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.Equal(t, doc.Properties.Reason.Enum, Reasons())
	for _, r := range Reasons() {
		require.True(t, KnownReason(r))
	}
	require.False(t, KnownReason("nope"))
}
