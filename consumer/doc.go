// Package consumer turns employee.card.requested messages into cards.
//
// For each message it decodes and validates the CloudEvent, checks the
// inbox, checks the binding of the event's source to the client, finds or
// provisions the client's MBanq self-service user, orders the card with that
// user's token, and commits the outcome with its outbox event before it
// acknowledges the message. What is done with a message in every case
// (acknowledge, give up with card.failed, retry later, hold, pause the
// process, hand it back) is decided in one pure function, Policy.Decide in
// package decision; decision.FaultOf sorts what went wrong, and Handle
// applies the decision to the JetStream message. Faults of the deployment pause the
// process instead of failing requests (pause.go).
package consumer
