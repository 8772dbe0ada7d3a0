// Package consumer turns employee.card.requested messages into cards.
//
// For each message it decodes and validates the CloudEvent, checks the
// inbox, checks the binding of the event's source to the client, finds or
// provisions the client's MBanq self-service user, orders the card with that
// user's token, and commits the outcome with its outbox event before it
// acknowledges the message. What is done with a message in every case
// (acknowledge, retry later, give up) is decided in one table, disposition.go.
package consumer
