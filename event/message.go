package event

import (
	"maps"

	"github.com/nats-io/nats.go"
)

// Message is an event ready to publish on NATS. It is plain data, so a store
// can keep it (an outbox row) and a relay publish it later byte for byte.
type Message struct {
	// Subject is the NATS subject: the event type.
	Subject string
	Header  nats.Header
	Data    []byte
}

// NATS returns the message as a *nats.Msg for Publish or
// JetStream.PublishMsg. The header map is copied, so m can be published
// again: the client writes into the headers it sends (Nats-Msg-Id), and may
// still be sending an earlier publish of m when the next one starts (it
// retries a publish that found no responders). The data is shared.
func (m Message) NATS() *nats.Msg {
	return &nats.Msg{Subject: m.Subject, Header: maps.Clone(m.Header), Data: m.Data}
}

// Mode is a CloudEvents binding mode.
type Mode int

const (
	// Binary puts the attributes in ce-* headers and the data in the body.
	Binary Mode = iota
	// Structured puts the whole event, as JSON, in the body.
	Structured
)

func (m Mode) String() string {
	switch m {
	case Binary:
		return "binary"
	case Structured:
		return "structured"
	}
	return "Mode(invalid)"
}
