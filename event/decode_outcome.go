package event

import (
	"encoding/json"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats.go"
)

// DecodeOutcome reads a card.issued or card.failed back from NATS, for tests
// and tools that subscribe to card.>. Data is Issued or Failed according to
// the type, or json.RawMessage for any other type. It is lenient where Decode
// is strict: it checks neither the schema nor the sizes.
func DecodeOutcome(h nats.Header, body []byte) (Outcome, error) {
	m, derr := newIncoming(h, body)
	if derr != nil {
		return Outcome{}, fmt.Errorf("decoding outcome: %w", derr)
	}
	if m.encoding == binding.EncodingBinary && versions.Version(m.headers[headerSpecVersion]) == nil {
		return Outcome{}, fmt.Errorf("decoding outcome: unknown specversion")
	}
	ev, err := toEvent(m)
	if err != nil {
		return Outcome{}, fmt.Errorf("decoding outcome: %w", err)
	}
	o := Outcome{
		Type:    ev.Type(),
		ID:      ev.ID(),
		Source:  ev.Source(),
		Subject: ev.Subject(),
		Time:    ev.Time(),
	}
	o.TraceParent, o.TraceState = m.traceContext(stringExtension(ev, "traceparent"), stringExtension(ev, "tracestate"))
	switch o.Type {
	case TypeCardIssued:
		var d Issued
		err = json.Unmarshal(ev.Data(), &d)
		o.Data = d
	case TypeCardFailed:
		var d Failed
		err = json.Unmarshal(ev.Data(), &d)
		o.Data = d
	default:
		o.Data = json.RawMessage(ev.Data())
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("decoding %s data: %w", o.Type, err)
	}
	return o, nil
}
