package app_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/store"
)

// structured returns a structured-mode message of the JSON event ev.
func structured(ev map[string]any) *nats.Msg {
	b, _ := json.Marshal(ev)
	return raw(map[string]string{"content-type": "application/cloudevents+json"}, b)
}

func raw(h map[string]string, body []byte) *nats.Msg {
	m := &nats.Msg{Subject: event.TypeCardRequested, Header: nats.Header{}, Data: body}
	for k, v := range h {
		m.Header[k] = []string{v} // as written, not canonicalised
	}
	return m
}

// validEvent is a structured employee.card.requested with id.
func validEvent(id string) map[string]any {
	return map[string]any{
		"specversion": "1.0", "id": id, "source": erp, "type": event.TypeCardRequested, "subject": "E-7",
		"datacontenttype": "application/json",
		"data": map[string]any{
			"employee": map[string]any{"id": "E-7", "firstName": "Alan", "lastName": "Turing"},
			"clientId": 1,
		},
	}
}

func without(ev map[string]any, key string) map[string]any {
	delete(ev, key)
	return ev
}

func with(ev map[string]any, key string, v any) map[string]any {
	ev[key] = v
	return ev
}

func TestBadInputGetsARecordedOutcome(t *testing.T) {
	b := setup(t)
	ctx := context.Background()

	type badCase struct {
		name   string
		msg    *nats.Msg
		id     string // the request id a card.failed answers; "" when none can
		reason string
	}
	id := func() string { return uuid.NewString() }
	var cases []badCase
	add := func(name string, msg *nats.Msg, id, reason string) {
		cases = append(cases, badCase{name, msg, id, reason})
	}
	add("not JSON", raw(map[string]string{"content-type": "application/cloudevents+json"}, []byte("card please")), "", event.ReasonInvalidEvent)
	add("no headers, not JSON", raw(nil, []byte("\x00\x01")), "", event.ReasonInvalidEvent)
	add("JSON that is not a CloudEvent", structured(map[string]any{"hello": "world"}), "", event.ReasonInvalidEvent)
	add("missing id", structured(without(validEvent(""), "id")), "", event.ReasonInvalidEvent)
	add("missing source", structured(without(validEvent(id()), "source")), "", event.ReasonInvalidEvent)
	i := id()
	add("missing type", structured(without(validEvent(i), "type")), i, event.ReasonInvalidEvent)
	i = id()
	add("missing specversion", structured(without(validEvent(i), "specversion")), i, event.ReasonInvalidEvent)
	i = id()
	add("specversion 0.3", structured(with(validEvent(i), "specversion", "0.3")), i, event.ReasonUnsupportedEvent)
	i = id()
	add("unknown type", structured(with(validEvent(i), "type", "employee.card.cancelled")), i, event.ReasonUnsupportedEvent)
	i = id()
	add("data failing the schema", structured(with(validEvent(i), "data", map[string]any{"clientId": "one"})), i, event.ReasonSchemaInvalid)
	i = id()
	add("oversized payload", structured(with(validEvent(i), "data", map[string]any{
		"employee": map[string]any{"id": "E-7", "firstName": strings.Repeat("A", 100<<10), "lastName": "T"}, "clientId": 1})), i, event.ReasonInvalidEvent)
	i = id()
	add("oversized binary payload", raw(map[string]string{
		"ce-specversion": "1.0", "ce-id": i, "ce-source": erp, "ce-type": event.TypeCardRequested,
		"content-type": "application/json"}, []byte(`{"pad":"`+strings.Repeat("B", 100<<10)+`"}`)), i, event.ReasonInvalidEvent)
	add("invalid UTF-8 in a binary header", raw(map[string]string{
		"ce-specversion": "1.0", "ce-id": "\xff\xfe", "ce-source": erp, "ce-type": event.TypeCardRequested,
		"content-type": "application/json"}, []byte(`{}`)), "", event.ReasonInvalidEvent)
	i = id()
	add("invalid UTF-8 in data", raw(map[string]string{
		"Ce-Specversion": "1.0", "CE-ID": i, "ce-Source": erp, "ce-type": event.TypeCardRequested,
		"Content-Type": "application/json"}, []byte("{\"employee\":{\"id\":\"E\xff\"}}")), i, event.ReasonSchemaInvalid)
	i = id()
	add("client not bound to the source", structured(with(validEvent(i), "data", map[string]any{
		"employee": map[string]any{"id": "E-7", "firstName": "Alan", "lastName": "Turing"}, "clientId": 2})), i, event.ReasonUnboundSource)

	for _, c := range cases {
		_, err := b.js.PublishMsg(ctx, c.msg)
		require.NoError(t, err, c.name)
	}
	// A good request after all of them still gets its card: nothing above
	// crashed the consumer or wedged it.
	good := request(erp, 1)
	b.publish(t, good, event.Binary)

	wantEvents := 1
	for _, c := range cases {
		if c.id != "" {
			wantEvents++
		}
	}
	require.EqualValues(t, wantEvents, b.settle(t))

	byID := map[string]event.Outcome{}
	for _, o := range b.outcomes(t, wantEvents) {
		byID[o.ID] = o
	}
	require.Equal(t, event.TypeCardIssued, byID[event.OutcomeID(erp, good.ID)].Type)

	dls, err := b.store.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, dls, len(cases), "every bad message is kept as a dead letter")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var found *store.DeadLetter
			kept := c.msg.Data[:min(len(c.msg.Data), event.MaxEventSize)] // a larger body is kept cut
			for i := range dls {
				if string(dls[i].Data) == string(kept) {
					found = &dls[i]
				}
			}
			require.NotNil(t, found, "dead letter kept with the original body (at most MaxEventSize of it)")
			if len(c.msg.Data) > event.MaxEventSize {
				require.Contains(t, found.Message, "kept cut to")
			}
			require.Equal(t, c.reason, found.Reason)
			require.NotEmpty(t, found.Message)
			require.EqualValues(t, 1, found.Deliveries, "permanent failures are not retried")
			if c.id == "" {
				return
			}
			o, ok := byID[event.OutcomeID(erp, c.id)]
			require.True(t, ok, "card.failed published")
			require.Equal(t, event.TypeCardFailed, o.Type)
			require.NoError(t, o.Validate())
			require.Equal(t, c.reason, o.Data.(event.Failed).Reason)
		})
	}
	require.Equal(t, 1, len(b.sandbox.Cards()))
}

func TestDuplicateIDWithDifferentPayloadIsRecordedNotIssued(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	first := request(erp, 1)
	b.publish(t, first, event.Binary)
	b.outcomes(t, 1)

	second := first
	second.Data.Reference = "PO-other"
	b.publish(t, second, event.Structured)
	require.EqualValues(t, 1, b.settle(t), "no second outcome")
	require.Equal(t, 1, b.sandbox.CardCount(1), "no second card")

	dls, err := b.store.DeadLetters(ctx, store.DeadLetterFilter{Reason: event.ReasonDuplicateConflict})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, first.ID, dls[0].RequestID)
	p, err := b.store.ProcessedRequest(ctx, erp, first.ID)
	require.NoError(t, err)
	require.Equal(t, store.OutcomeIssued, p.Outcome, "the first request stands")
}
