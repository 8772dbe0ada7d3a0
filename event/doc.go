// Package event is cardbridge's CloudEvents boundary on NATS: it decodes and
// validates incoming employee.card.requested events, and encodes the
// card.issued and card.failed events that answer them.
//
// Both CloudEvents NATS binding modes are read: structured (content-type
// application/cloudevents+json, the whole event as JSON body) and binary
// (ce-* headers, data as the body), with header names matched
// case-insensitively because NATS headers, unlike HTTP's, are not
// canonicalised. Outcomes are always written in binary mode, with
// Nats-Msg-Id set to the event id so that JetStream drops republished
// duplicates.
//
// The mapping between NATS and events goes through the CloudEvents SDK's
// binding package (a binding.Message over NATS headers and body for reading,
// a binding.BinaryWriter over nats.Header for writing); this package adds the
// rules the SDK leaves to the application: sizes, UTF-8, allowed spec
// version and type, the data schema, and the stable failure reasons.
package event

// CloudEvent types cardbridge reads and writes. They are also the NATS
// subjects the events travel on.
const (
	TypeCardRequested = "employee.card.requested"
	TypeCardIssued    = "card.issued"
	TypeCardFailed    = "card.failed"
)
