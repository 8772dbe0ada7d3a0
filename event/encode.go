package event

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	cloudevent "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

const contentTypeJSON = "application/json"

// Encode renders the outcome as a binary-mode CloudEvent on the NATS subject
// named by its type: ce-specversion, ce-id, ce-source, ce-type, ce-subject,
// ce-time, content-type application/json, ce-traceparent and ce-tracestate
// when set, and Nats-Msg-Id equal to the id so that JetStream drops a
// republished duplicate. A malformed TraceParent is left out, as W3C asks.
func (o Outcome) Encode() (Message, error) {
	if o.Type == "" || o.ID == "" || o.Source == "" {
		return Message{}, errors.New("encoding outcome: type, id and source are required")
	}
	data, err := marshalData(o.Data)
	if err != nil {
		return Message{}, fmt.Errorf("encoding %s data: %w", o.Type, err)
	}
	ev := newEvent(o.Type, o.ID, o.Source, o.Subject, o.Time, o.TraceParent, o.TraceState, data)
	msg, err := writeBinary(ev, o.Type)
	if err != nil {
		return Message{}, fmt.Errorf("encoding %s: %w", o.Type, err)
	}
	msg.Header.Set(headerMsgID, o.ID)
	return msg, nil
}

// EncodeRequest renders r as an employee.card.requested in the given mode,
// for the publish command, tests and load generators. An empty r.Type means
// TypeCardRequested; other attributes are written as given, empty ones left
// out, so that deliberately incomplete requests can be produced too.
//
// No Nats-Msg-Id is set: a replayed request keeps its id and must not be
// dropped by JetStream's duplicate window; cardbridge deduplicates requests
// itself, on (source, id).
func EncodeRequest(r Request, mode Mode) (Message, error) {
	typ := r.Type
	if typ == "" {
		typ = TypeCardRequested
	}
	data, err := json.Marshal(r.Data)
	if err != nil {
		return Message{}, fmt.Errorf("encoding request data: %w", err)
	}
	ev := newEvent(typ, r.ID, r.Source, r.Subject, r.Time, r.TraceParent, r.TraceState, data)
	switch mode {
	case Binary:
		return writeBinary(ev, TypeCardRequested)
	case Structured:
		body, err := format.JSON.Marshal(ev)
		if err != nil {
			return Message{}, fmt.Errorf("encoding request: %w", err)
		}
		h := nats.Header{}
		h.Set(headerContentType, mediaTypeStructuredJSON)
		return Message{Subject: TypeCardRequested, Header: h, Data: body}, nil
	}
	return Message{}, fmt.Errorf("encoding request: unknown mode %d", int(mode))
}

// newEvent builds a CloudEvents 1.0 event with JSON data.
func newEvent(typ, id, source, subject string, at time.Time, traceParent, traceState string, data []byte) *cloudevent.Event {
	ev := cloudevent.New(cloudevent.CloudEventsVersionV1)
	ev.SetType(typ)
	ev.SetID(id)
	ev.SetSource(source)
	if subject != "" {
		ev.SetSubject(subject)
	}
	if !at.IsZero() {
		ev.SetTime(at)
	}
	if validTraceParent(traceParent) {
		ev.SetExtension("traceparent", traceParent)
		if ts := cleanTraceState(traceState); ts != "" {
			ev.SetExtension("tracestate", ts)
		}
	}
	ev.SetDataContentType(contentTypeJSON)
	// Assigned rather than SetData([]byte), which would mark the data as
	// binary and make the structured form carry it as data_base64.
	ev.DataEncoded = data
	return &ev
}

// writeBinary writes ev through the SDK's binding into NATS headers.
func writeBinary(ev *cloudevent.Event, subject string) (Message, error) {
	w := newHeaderWriter()
	if _, err := binding.Write(context.Background(), binding.ToMessage(ev), nil, w); err != nil {
		return Message{}, err
	}
	return Message{Subject: subject, Header: w.header, Data: w.data}, nil
}

func marshalData(v any) ([]byte, error) {
	switch v := v.(type) {
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, errors.New("data is not valid JSON")
		}
		return v, nil
	case nil:
		return nil, errors.New("no data")
	}
	return json.Marshal(v)
}
